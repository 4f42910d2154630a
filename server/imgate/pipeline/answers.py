"""What the dispatcher does with a vendor answer around the translator's parse():

- read the body with a bound (CONTRACT §8 rule 24: an answer larger than
  `max_response_bytes` is never buffered beyond it, and makes the call UNCERTAIN);
- log credential refusals at WARNING once per episode, not once per call.

No I/O library is imported here: the reader takes any object with aiohttp's
`StreamReader.read(n)` shape.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import CallResult, Disposition, uncertain_all

log = logging.getLogger("imgate.dispatch")

_READ_CHUNK_BYTES: Final = 64 << 10


class Readable(Protocol):
    """A response body stream (aiohttp `ClientResponse.content`)."""

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes; b"" at the end."""


async def read_bounded(content: Readable, content_length: int | None, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes (at most
    `limit` + one read of it is ever held). A declared Content-Length over the limit is
    refused before anything is read."""
    if content_length is not None and content_length > limit:
        return None
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await content.read(min(_READ_CHUNK_BYTES, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)


def connection_detail(written: bool) -> str:
    """An outcome's detail for a connection that failed: what it means for the caller, not
    the Python exception's name (CONTRACT §8 rule 23 keeps those out of error texts)."""
    if written:
        return "the connection failed after the request was sent; the vendor may have it"
    return "the connection failed before the request was sent"


def oversized_answer(limit: int) -> CallResult:
    """The verdict for an answer larger than `limit`: the vendor answered, so it may have
    processed the call, and the answer cannot be read (UNCERTAIN, never resent)."""
    return uncertain_all(f"vendor answer larger than {limit} bytes (max_response_bytes)")


class AuthFailureLog:
    """Logs a backend's credential refusals: WARNING for the first of an episode, DEBUG
    for the rest, and INFO when a call is answered normally again (episode over)."""

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self.in_episode = False

    def observe(self, result: CallResult) -> None:
        """Note one classified vendor answer."""
        if result.disposition is not Disposition.DONE:
            return  # retries, pauses and refreshes say nothing about the credentials yet
        first = result.results[0] if result.results else None
        refused = first is not None and first.reason == pb.FAILURE_REASON_AUTH_FAILED
        if not refused:
            if self.in_episode:
                self.in_episode = False
                log.info("backend %s: the vendor accepts the credentials again", self._backend)
            return
        assert first is not None
        if self.in_episode:
            log.debug(
                "backend %s: credentials refused again (vendor code %s)",
                self._backend,
                first.vendor_code,
            )
            return
        self.in_episode = True
        log.warning(
            "backend %s: the vendor refused the credentials (vendor code %s: %s); check"
            " the backend's credentials. Further refusals are logged at DEBUG until a"
            " call succeeds",
            self._backend,
            first.vendor_code,
            first.detail,
        )
