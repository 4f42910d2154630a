"""NetEase Yunxin, legacy nimserver API."""
