"""NetEase Yunxin, v2 API."""
