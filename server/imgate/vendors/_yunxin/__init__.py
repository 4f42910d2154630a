"""What NetEase Yunxin's two APIs share (limits, checksum, body rules)."""
