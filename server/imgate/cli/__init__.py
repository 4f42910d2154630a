"""The `imgate` command: serve, sandbox, send, batch, health, token."""
