"""Recall batches (CONTRACT §9 rule 27): taking back what a batch delivered.

`RecallBatch` cancels the batch if it has not ended (rule 7), waits for it to end, and
makes its recall batch in the store (Store.create_recall: the original's ACCEPTED and
UNCERTAIN recipients, with what the vendor's recall API needs of each, read from the
original's outcome pages; the original marked `recalled_by` in the same transaction, so
a second RecallBatch finds it). The recall batch then runs like any batch, through the
backend's recall lane: the vendor's recall translator, its own quota and permits
(backend.Backend.recall), write-ahead before each call, the retry policy, one outcome
per recipient recorded by the sink, resumed after a crash (a call that may have been in
flight ends UNCERTAIN, never sent again).

`RecallRun` is a BatchRun whose chunks are one recipient each (every vendor's recall API
takes one message to one recipient); a recipient for whom the gateway holds no vendor
message id (its original outcome was UNCERTAIN, or the backend did not ask for ids) needs
no call: runs of them are recorded FAILED/NOT_RECALLABLE at once.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence

from imgate.pipeline.backend import Backend
from imgate.pipeline.dispatch import BatchRun
from imgate.pipeline.sink import UNSENT_PAGE, Chunk
from imgate.pipeline.watch import woken
from imgate.store.base import Store
from imgate.store.records import PLANNED, RECIPIENT_PAGE, BatchRow, ChunkRow, RecallKey
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.recall import RecallTarget

# A batch being cancelled for a recall is given this long beyond its backend's request
# timeout to end (its calls in flight end with their real outcome; on a shared store its
# owner notices the cancel within a second).
_END_MARGIN_S = 5.0

_NO_ID_UNCERTAIN = "its original outcome was UNCERTAIN: the gateway holds no vendor message id"
_NO_ID_ACCEPTED = (
    "the vendor gave no message id for it (a Yunxin legacy backend recalls what it sent"
    " with recallable = true)"
)


class NotRecallable(Exception):
    """The batch's backend cannot recall (FAILED_PRECONDITION): the message says why."""


class StillEnding(Exception):
    """The batch was cancelled but has not ended yet: RecallBatch again a little later."""


def recall_row(original: BatchRow, request_id: str, create_time: float) -> BatchRow:
    """A new recall batch of `original` (its recipients and total are the store's)."""
    return BatchRow(
        batch_id=uuid.uuid4().hex,
        caller=original.caller,
        request_id=request_id,
        fingerprint=hashlib.sha256(b"recall " + original.batch_id.encode()).digest(),
        backend=original.backend,
        spec=original.spec,  # its sender: the recall APIs name it
        bound=False,
        total=0,
        duplicates_removed=0,
        create_time=create_time,
        recall_of=original.batch_id,
    )


def why_not_recallable(original: BatchRow, backend: Backend | None) -> str | None:
    """Why `original` cannot be recalled through `backend`, or None."""
    if original.recall_of:
        return f"batch {original.batch_id} is a recall batch: it cannot be recalled"
    if backend is None:
        return f"backend {original.backend} is no longer configured"
    if backend.recall is not None:
        return None
    spec = backend.translator.spec
    if spec.recall is None:
        return f"backend {original.backend}: {spec.display_name} has no recall API"
    return (
        f"backend {original.backend} is not recallable (set recallable = true: it then asks"
        f" the vendor for the message ids recall needs)"
    )


async def until_ended(store: Store, batch_id: str, within_s: float) -> BatchRow:
    """The batch once it has ended; StillEnding after `within_s`."""
    deadline = time.monotonic() + within_s
    with store.notifier.watching(batch_id) as changed:
        while True:
            changed.clear()
            row = await store.get_batch(batch_id)
            if row is None:
                raise LookupError(batch_id)
            if row.ended:
                return row
            left = deadline - time.monotonic()
            if left <= 0:
                raise StillEnding(
                    f"batch {batch_id} is cancelled and still ending its calls in flight;"
                    " RecallBatch again in a moment (nothing was recalled yet)"
                )
            await woken(changed, min(0.25, left))


def end_wait_s(backend: Backend) -> float:
    """How long a RecallBatch waits for the batch it cancelled to end."""
    return backend.config.request_timeout_s + _END_MARGIN_S


class RecallRun(BatchRun):
    """Sends a recall batch through its backend's recall lane (see the module docstring)."""

    async def _chunks(self, per_call: int) -> AsyncIterator[Chunk]:
        store, row = self.store, self.row
        for stored in await store.chunks(row.batch_id):
            if stored.state == PLANNED:
                ids, indexes = await store.read_recipients(row.batch_id, stored.start, stored.end)
                keys = await store.read_recall_keys(row.batch_id, stored.start, stored.end)
                yield self._chunk(stored, ids, indexes, keys)
        # A page of recipients and their keys at a time: memory stays flat.
        number, position = row.chunk_count, row.planned_to
        while position < row.total:
            end = min(row.total, (position // RECIPIENT_PAGE + 1) * RECIPIENT_PAGE)
            ids, indexes = await store.read_recipients(row.batch_id, position, end)
            keys = await store.read_recall_keys(row.batch_id, position, end)
            offset = 0
            while offset < len(ids):
                size, first = 1, keys[offset]
                if not first.message_id:  # a run of them, recorded without a call
                    while (
                        offset + size < len(ids)
                        and size < UNSENT_PAGE
                        and not keys[offset + size].message_id
                        and keys[offset + size].state == first.state
                    ):
                        size += 1
                start = position + offset
                chunk_row = ChunkRow(row.batch_id, number, start, start + size, PLANNED)
                part = slice(offset, offset + size)
                yield self._chunk(chunk_row, ids[part], indexes[part], keys[part])
                number, offset = number + 1, offset + size
            position = end

    def _chunk(
        self,
        chunk_row: ChunkRow,
        ids: Sequence[str],
        indexes: Sequence[int],
        keys: Sequence[RecallKey],
    ) -> Chunk:
        chunk = Chunk(chunk_row, ids, indexes)
        if len(ids) == 1 and keys[0].message_id:
            key = keys[0]
            chunk.target = RecallTarget(str(self._prepared), ids[0], key.message_id, key.time_ms)
        else:  # a run of the same original state (a stored planned chunk is one too)
            unsure = keys[0].state == pb.DELIVERY_STATE_UNCERTAIN
            detail = _NO_ID_UNCERTAIN if unsure else _NO_ID_ACCEPTED
            chunk.without_call = (pb.FAILURE_REASON_NOT_RECALLABLE, detail)
        return chunk
