"""Log lines that say which batch they belong to, without passing ids around.

The servicer sets `log_context` for each RPC; asyncio copies it into every task the batch
starts, so the dispatcher's lines carry the backend and request id too. Paths, never URLs:
Tencent puts its signature in the query string.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

log_context: ContextVar[str] = ContextVar("imgate_log_context", default="-")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = log_context.get()
        return True


def configure_logging(level: str) -> None:
    """Log to stderr with the batch context on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(context)s] %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
