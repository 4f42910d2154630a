"""Log lines that say which batch they belong to and that no input can forge.

The servicer sets the log context (`set_log_context`) for each RPC; asyncio copies it into
every task the batch starts, so the dispatcher's lines carry the backend and request id
too. The context is a small mapping in a contextvar: the text format renders it as
`[backend=… request_id=… batch_id=… caller=…]`, the JSON format as fields of their own.

CONTRACT.md rule 22: every value that reaches a line (context fields and the arguments of
a message; the format strings are ours) has its control characters escaped (`\\n`,
`\\x1b`, ...) and is cut to `MAX_VALUE_CHARS`, so a recipient, backend name or vendor
detail can neither start a line of its own nor make a 2 MB line. Tracebacks keep their
lines but each is indented, so none can pass for a record.
Paths, never URLs: Tencent puts its signature in the query string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

MAX_VALUE_CHARS = 256
CONTEXT_FIELDS = ("backend", "request_id", "batch_id", "caller")

_EMPTY: Mapping[str, str] = {}
log_context: ContextVar[Mapping[str, str]] = ContextVar("imgate_log_context", default=_EMPTY)

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a
# terminal or a log shipper might take as the end of a line or an escape sequence.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or f"\\x{ord(char):02x}"


def clean(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`value` safe for one log line: cut to `limit` characters, controls escaped."""
    if len(value) > limit:
        value = f"{value[:limit]}…({len(value) - limit} more)"
    return _CONTROL.sub(_escape_one, value)


def set_log_context(**fields: str) -> None:
    """Set context fields for this task and the tasks it starts (others are kept).

    A fresh mapping each time: a copied context must never see a later change.
    """
    log_context.set({**log_context.get(), **fields})


def _clean_arg(value: Any) -> Any:
    # Numbers cannot forge anything and keep %d / %.1f working; everything else is text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return clean(value if isinstance(value, str) else str(value))


class _ContextFilter(logging.Filter):
    """Adds the context fields and makes the message's arguments safe."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = log_context.get()
        for name in CONTEXT_FIELDS:
            setattr(record, name, clean(context.get(name) or "-"))
        if record.args:
            args = record.args
            if isinstance(args, Mapping):
                record.args = {key: _clean_arg(value) for key, value in args.items()}
            else:
                record.args = tuple(_clean_arg(value) for value in args)
        else:
            # No arguments: the message itself may have been built from input.
            record.msg = clean(str(record.msg), 4 * MAX_VALUE_CHARS)
        return True


def _indent(text: str) -> str:
    """Every line indented (logging puts a traceback on the lines after the record's)."""
    return "    " + _CONTROL.sub(lambda m: "\n    " if m.group() == "\n" else _escape_one(m), text)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER [backend=… request_id=… batch_id=… caller=…] message`."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s [backend=%(backend)s request_id=%(request_id)s"
            " batch_id=%(batch_id)s caller=%(caller)s] %(message)s"
        )

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


def json_formatter() -> logging.Formatter:
    """One JSON object per line (python-json-logger; it escapes what JSON must)."""
    return JsonFormatter(
        "{asctime}{levelname}{name}{message}{backend}{request_id}{batch_id}{caller}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        timestamp=False,
    )


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    """A handler writing `log_format` ("text" or "json") to `stream` (stderr)."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter())
    return handler


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr with the batch context on every line (replaces earlier settings)."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format)], force=True)
