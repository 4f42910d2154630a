"""RongCloud (融云) server API: private messages (CONTRACT §12 rule 35)."""
