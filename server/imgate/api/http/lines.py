"""A client stream read from an HTTP body's lines (UploadRecipients: one id per line).

The body is read READ_BYTES at a time, whatever the socket has buffered, and handed on
PAGE_LINES values at a time: what is held is bounded by those two numbers, never by the
body's size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from imgate.api.errors import invalid
from imgate.vendors.base.translator import FieldViolation

PAGE_LINES = 10_000
"""Values per page of a client stream read from lines (UploadRecipients)."""
MAX_LINE_BYTES = 4096
"""A longer line cannot be an id: the upload fails instead of buffering it."""
READ_BYTES = 64 * 1024
"""How much of the body is read (and split into lines) at once."""


async def pages_of_lines(content: aiohttp.StreamReader) -> AsyncIterator[list[str]]:
    """The body's lines, stripped, blank ones and a leading UTF-8 byte-order mark dropped,
    PAGE_LINES at a time. Read READ_BYTES at a time, whatever the socket has buffered, so
    that what is held is bounded by those two numbers. A line that is not UTF-8, or longer
    than MAX_LINE_BYTES, fails the upload."""
    page: list[str] = []
    rest = b""
    number = 0  # lines before `rest`
    async for chunk in content.iter_chunked(READ_BYTES):
        complete, newline, rest = (rest + chunk).rpartition(b"\n")
        if len(rest) > MAX_LINE_BYTES:
            line = number + 1 + (complete.count(b"\n") + 1 if newline else 0)
            raise invalid([FieldViolation(f"line {line}", "longer than any id")])
        if not newline:
            continue
        for value in _decoded(complete, number):
            if value:
                page.append(value)
                if len(page) >= PAGE_LINES:
                    yield page
                    page = []
        number += complete.count(b"\n") + 1
    for value in _decoded(rest, number):
        if value:
            page.append(value)
    if page:
        yield page


def _decoded(block: bytes, before: int) -> list[str]:
    """The lines of `block` (no trailing newline), decoded and stripped; `before`: lines
    of the body before it (for the error's line number)."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = before + block[: exc.start].count(b"\n") + 1
        raise invalid([FieldViolation(f"line {line}", "not UTF-8")]) from None
    if before == 0:
        text = text.removeprefix("\ufeff")
    return [line.strip() for line in text.split("\n")]
