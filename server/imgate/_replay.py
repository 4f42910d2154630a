"""Batches kept by request_id (AIP-155 style), so a repeated request is never sent twice.

The same id with the same payload attaches to the batch: what is done is replayed and the
rest streams live. The same id with another payload is refused. Finished batches are kept
for `retention_s` and at most `max_outcomes` outcomes in all (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from imgate.v1 import gateway_pb2 as pb


def payload_fingerprint(request: pb.BatchSendRequest, backend: str) -> bytes:
    """Digest of everything in the request except its request_id (backend resolved)."""
    payload = pb.BatchSendRequest()
    payload.CopyFrom(request)
    payload.request_id = ""
    payload.backend = backend
    return hashlib.sha256(payload.SerializeToString(deterministic=True)).digest()


class BatchRecord:
    """Outcomes of one batch as they arrive, readable by any number of followers."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        self.responses: list[pb.BatchSendResponse] = []
        self.outcome_count = 0
        self.summary: pb.BatchSummary | None = None
        self.finished_at: float | None = None
        self._changed = asyncio.Event()

    def append(self, response: pb.BatchSendResponse) -> None:
        self.extend([response])

    def extend(self, responses: list[pb.BatchSendResponse]) -> None:
        self.responses.extend(responses)
        self.outcome_count += sum(len(r.outcomes) for r in responses)
        self._wake()

    def finish(self, summary: pb.BatchSummary, now: float) -> None:
        self.summary = summary
        self.finished_at = now
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self) -> AsyncIterator[pb.BatchSendResponse]:
        """Every outcome message recorded so far, then the new ones, until finished."""
        position = 0
        while True:
            changed = self._changed
            if position < len(self.responses):
                position += 1
                yield self.responses[position - 1]
                continue
            if self.summary is not None:
                return
            await changed.wait()


class RequestIdStore:
    """The batches that carried a request_id, live and recently finished."""

    def __init__(
        self,
        retention_s: float,
        max_outcomes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retention_s = retention_s
        self._max_outcomes = max_outcomes
        self._clock = clock
        self._records: OrderedDict[str, BatchRecord] = OrderedDict()

    def get(self, request_id: str) -> BatchRecord | None:
        self._prune()
        return self._records.get(request_id)

    def start(self, request_id: str, fingerprint: bytes) -> BatchRecord:
        self._prune()
        record = BatchRecord(fingerprint)
        self._records[request_id] = record
        return record

    def _prune(self) -> None:
        now = self._clock()
        total = sum(r.outcome_count for r in self._records.values())
        for request_id, record in list(self._records.items()):
            if record.finished_at is None:
                continue  # live batches are never dropped
            expired = now - record.finished_at > self._retention_s
            if expired or total > self._max_outcomes:
                total -= record.outcome_count
                del self._records[request_id]
