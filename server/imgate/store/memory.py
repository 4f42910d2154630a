"""The memory store: the store interface in this process's memory; nothing survives a restart.

Sandbox mode's default. It follows the same rules as the durable stores (fencing,
idempotent create, outcome pages in order) so the shared test suite holds for it too.

What it keeps is bounded (a sandbox runs for days, and purge only forgets batches after
`batch_retention_s`, 7 days): beyond `max_ended_batches` ended batches, or beyond
`max_ended_bytes` of their recipient ids and outcome pages (an estimate of the memory they
take, Python's per-object costs included), it forgets its oldest-ended batches first, as an
early purge: the batch, its ids, its outcomes, its chunks and its request_id (the same
request_id then creates a new batch). It never forgets an unfinished batch, nor the
newest ended one (a single batch over the byte bound stays until another batch ends, so
that its watchers can read it to its end). A forgotten batch is unknown from then on, as
a purged one: get_batch says None, read_outcomes nothing. Recipient lists are not
counted: a batch made from one shares the list's ids, which purge forgets by age, as
before. Nothing of it survives a restart anyway.

The defaults hold a long sandbox session's history (ListBatches) and about a million
recipients' outcomes, in about 256 MiB at most for ended batches whatever the load.
Webhook events are store/memory_outbox.py's.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Callable, Sequence

from imgate.clock import SteadyClock
from imgate.store.memory_outbox import MemoryOutbox
from imgate.store.recall import recalled_outcomes
from imgate.store.records import (
    CLAIMED,
    ENDED_STATES,
    FINAL_CHUNK_STATES,
    PLANNED,
    SENDABLE_STATES,
    SENDING,
    UNFINISHED_STATES,
    BatchCancelling,
    BatchRow,
    ChunkRow,
    Counts,
    Fenced,
    ListRow,
    OutcomePage,
    RecallKey,
    Recovered,
    WebhookEvent,
    batch_order,
)
from imgate.v1 import gateway_pb2 as pb

DEFAULT_MAX_ENDED_BATCHES = 10_000
DEFAULT_MAX_ENDED_BYTES = 256 * 1024 * 1024

# Estimated bytes per kept object beyond its payload (CPython, 64-bit): an ASCII str's
# header and its list slot; an int and its slot; an OutcomePage, its bytes' header and its
# slot; a ChunkRow and its dict entry; a batch's rows, dicts and index entries.
_PER_ID = sys.getsizeof("") + 8
_PER_INDEX = sys.getsizeof(10**6) + 8
_PER_PAGE = 160
_PER_CHUNK = 200
_PER_BATCH = 1_000
_PER_KEY = 120  # a RecallKey tuple, its ints and its message id's header


@dataclasses.dataclass
class _Batch:
    row: BatchRow
    ids: list[str]
    indexes: Sequence[int]
    chunks: dict[int, ChunkRow] = dataclasses.field(default_factory=dict)
    pages: list[OutcomePage] = dataclasses.field(default_factory=list)
    list_id: str = ""
    """The recipient list it reads its recipients from, if made from one."""
    keys: list[RecallKey] = dataclasses.field(default_factory=list)
    """A recall batch: what the vendor's recall API needs of each recipient."""

    def cost(self) -> int:
        """Estimated bytes that forgetting this batch frees (a list's ids are the list's)."""
        ids = 0
        if not self.list_id:
            ids = sum(map(len, self.ids)) + _PER_ID * len(self.ids)
            if not isinstance(self.indexes, range):
                ids += _PER_INDEX * len(self.indexes)
        pages = sum(len(page.data) for page in self.pages) + _PER_PAGE * len(self.pages)
        keys = sum(len(key.message_id) + _PER_KEY for key in self.keys)
        return _PER_BATCH + ids + pages + keys + _PER_CHUNK * len(self.chunks)


@dataclasses.dataclass
class _List:
    row: ListRow
    # The memory store holds everything in memory anyway: a dict is its unique index.
    first_index: dict[str, int] = dataclasses.field(default_factory=dict)
    ids: list[str] | None = None
    indexes: list[int] | None = None
    """The unique ids and their indexes, made once when a batch first uses the list."""


class MemoryStore(MemoryOutbox):
    """Batches in dicts."""

    durable = False

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        max_ended_batches: int = DEFAULT_MAX_ENDED_BATCHES,
        max_ended_bytes: int = DEFAULT_MAX_ENDED_BYTES,
    ) -> None:
        """`max_ended_batches` and `max_ended_bytes` bound what ended batches keep (see
        the module docstring): 10,000 batches and 256 MiB by default."""
        super().__init__()
        if max_ended_batches < 1 or max_ended_bytes < 0:
            raise ValueError("max_ended_batches must be >= 1 and max_ended_bytes >= 0")
        self._clock = clock or SteadyClock()  # times that do not jump with the wall clock
        self._max_ended_batches = max_ended_batches
        self._max_ended_bytes = max_ended_bytes
        self._batches: dict[str, _Batch] = {}
        self._ended: dict[str, int] = {}
        """Ended batches still kept, oldest-ended first, with their cost (_Batch.cost)."""
        self._ended_bytes = 0
        self._by_request: dict[tuple[str, str], str] = {}
        self._lists: dict[str, _List] = {}
        self._lists_by_request: dict[tuple[str, str], str] = {}

    def _copy(self, row: BatchRow) -> BatchRow:
        # Callers get snapshots, as from a database: nobody mutates the stored row.
        return dataclasses.replace(row)

    async def create_batch(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        owner: str = "",  # one process: every batch is its own
        first_chunk: ChunkRow | None = None,
    ) -> tuple[BatchRow, bool]:
        if row.request_id:
            existing = self._by_request.get((row.caller, row.request_id))
            if existing is not None:
                return self._copy(self._batches[existing].row), False
            self._by_request[(row.caller, row.request_id)] = row.batch_id
        stored = dataclasses.replace(row, update_time=row.create_time)
        batch = _Batch(stored, list(ids), range(len(ids)) if indexes is None else list(indexes))
        self._batches[row.batch_id] = batch
        if first_chunk is not None:
            self._insert_or_check(batch, first_chunk, owner)
            first_chunk.state = SENDING
            batch.chunks[first_chunk.number].state = SENDING
        return self._copy(stored), True

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        batch = self._batches.get(batch_id)
        return None if batch is None else self._copy(batch.row)

    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        rows = [
            b.row
            for b in self._batches.values()
            if b.row.caller == caller
            and (before is None or (b.row.create_time, b.row.batch_id) < before)
        ]
        rows.sort(key=batch_order, reverse=True)
        return [self._copy(r) for r in rows[:limit]]

    async def unfinished_batches(self) -> list[BatchRow]:
        rows = [b.row for b in self._batches.values() if b.row.state in UNFINISHED_STATES]
        rows.sort(key=batch_order)
        return [self._copy(r) for r in rows]

    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        batch = self._batches[batch_id]
        return batch.ids[start:end], list(batch.indexes[start:end])

    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        batch = self._batches[batch_id]
        return [dataclasses.replace(c) for _, c in sorted(batch.chunks.items())]

    def _insert_or_check(self, batch: _Batch, chunk: ChunkRow, owner: str) -> ChunkRow:
        stored = batch.chunks.get(chunk.number)
        if stored is None:
            row = batch.row
            if chunk.number != row.chunk_count or chunk.start != row.planned_to:
                raise Fenced(f"chunk {chunk.number} does not follow the planned ones")
            stored = dataclasses.replace(chunk, owner=owner)
            batch.chunks[chunk.number] = stored
            row.chunk_count += 1
            row.planned_to = chunk.end
            return stored
        if stored.state in FINAL_CHUNK_STATES or (
            stored.state == SENDING and stored.owner != owner
        ):
            raise Fenced(f"chunk {chunk.number} is {stored.state} by another owner")
        return stored

    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        batch = self._batches[chunk.batch_id]
        if batch.row.state not in SENDABLE_STATES:
            raise BatchCancelling(f"batch {chunk.batch_id} is cancelled")
        stored = self._insert_or_check(batch, chunk, owner)
        stored.state, stored.owner, stored.attempts = SENDING, owner, chunk.attempts

    async def record(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> int:
        batch = self._batches[chunk.batch_id]
        stored = self._insert_or_check(batch, chunk, owner)
        stored.state, stored.owner, stored.attempts = final_state, owner, chunk.attempts
        row = batch.row
        seq = row.next_seq
        row.next_seq += 1
        batch.pages.append(OutcomePage(seq, page, chunk.end - chunk.start))
        row.accepted += counts.accepted
        row.failed += counts.failed
        row.uncertain += counts.uncertain
        row.vendor_calls += counts.vendor_calls
        row.update_time = self._clock()
        self.notifier.notify(chunk.batch_id)
        return seq

    async def record_last(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
        events: Sequence[WebhookEvent] = (),
    ) -> tuple[int, BatchRow]:
        seq = await self.record(chunk, final_state, page, counts, owner)
        ended = pb.BATCH_STATE_DONE
        if self._batches[chunk.batch_id].row.state == pb.BATCH_STATE_CANCELLING:
            ended = pb.BATCH_STATE_CANCELLED
        row = await self.set_state(chunk.batch_id, ended, events)
        assert row is not None
        return seq, row

    async def set_state(
        self, batch_id: str, state: int, events: Sequence[WebhookEvent] = ()
    ) -> BatchRow | None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return None
        row = batch.row
        if row.state in ENDED_STATES:
            return self._copy(row)
        if not (state == pb.BATCH_STATE_RUNNING and row.state == pb.BATCH_STATE_CANCELLING):
            row.state = state
        row.update_time = self._clock()
        if state in ENDED_STATES:
            row.end_time = row.update_time
            self._write_events(batch_id, row.end_time, events)
            self._keep_ended(batch)
        self.notifier.notify(batch_id)
        return self._copy(row)

    async def recover(self, owner: str) -> Recovered:
        recovered = Recovered()
        for batch in self._batches.values():
            if batch.row.state not in UNFINISHED_STATES:
                continue
            if batch.row.bound or batch.row.state == pb.BATCH_STATE_CANCELLING:
                recovered.to_close.append(batch.row.batch_id)
            elif batch.row.state == pb.BATCH_STATE_RUNNING:
                batch.row.state = pb.BATCH_STATE_QUEUED
            for chunk in batch.chunks.values():
                if chunk.state == CLAIMED:
                    chunk.state = PLANNED
                    recovered.reclaimed += 1
                elif chunk.state == SENDING:
                    chunk.owner = owner
                    recovered.sending.append(dataclasses.replace(chunk))
        return recovered

    async def _read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int
    ) -> list[OutcomePage]:
        batch = self._batches.get(batch_id)
        if batch is None:
            return []
        # seq n is pages[n - 1]: pages are appended in seq order and never removed.
        found: list[OutcomePage] = []
        size = 0
        for page in itertools.islice(batch.pages, after_seq, None):
            if found and size + len(page.data) > max_bytes:
                break
            found.append(page)
            size += len(page.data)
        return found

    # -- the queue --------------------------------------------------------------------

    def _queued(self, backend: str) -> list[BatchRow]:
        return [
            b.row
            for b in self._batches.values()
            if b.row.backend == backend and b.row.state == pb.BATCH_STATE_QUEUED
        ]

    async def claim_queued(
        self, backend: str, caller: str, owner: str, limit: int
    ) -> list[BatchRow]:
        # A scan: the memory store is sandbox mode's, with small backlogs.
        waiting = [r for r in self._queued(backend) if r.caller == caller]
        taken = sorted(waiting, key=batch_order)[:limit]
        for row in taken:
            row.state = pb.BATCH_STATE_RUNNING
            row.update_time = self._clock()
        return [self._copy(row) for row in taken]

    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        return {r.caller for r in self._queued(backend)}

    async def queued_count(self, backend: str) -> int:
        return len(self._queued(backend))

    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        rows = [b.row for b in self._batches.values() if b.row.state == pb.BATCH_STATE_CANCELLING]
        rows.sort(key=batch_order)
        return [self._copy(r) for r in rows[:limit]]

    # -- scheduled batches ------------------------------------------------------------

    async def promote_due(self, owner: str, now: float) -> list[tuple[str, str]]:
        due = []
        for batch in self._batches.values():
            row = batch.row
            if row.state == pb.BATCH_STATE_SCHEDULED and (row.send_after or 0.0) <= now:
                row.state = pb.BATCH_STATE_QUEUED
                row.update_time = self._clock()
                due.append((row.backend, row.caller))
        return due

    async def next_scheduled(self, owner: str) -> float | None:
        return min(
            (
                b.row.send_after or 0.0
                for b in self._batches.values()
                if b.row.state == pb.BATCH_STATE_SCHEDULED
            ),
            default=None,
        )

    # -- recall -----------------------------------------------------------------------

    async def create_recall(
        self, row: BatchRow, original_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        original = self._batches.get(original_id)
        if original is None:
            raise LookupError(f"no batch {original_id!r}")
        existing = original.row.recalled_by or (
            self._by_request.get((row.caller, row.request_id)) if row.request_id else None
        )
        if existing:
            if existing not in self._batches:
                raise LookupError(f"batch {original_id}'s recall {existing} is gone")
            return self._copy(self._batches[existing].row), False
        if not original.row.ended:
            raise ValueError(f"batch {original_id} has not ended")
        found = list(recalled_outcomes(page.data for page in original.pages))
        row.total = len(found)
        stored, _ = await self.create_batch(
            row, [recipient for recipient, _, _ in found], [index for _, index, _ in found]
        )
        self._batches[row.batch_id].keys = [key for _, _, key in found]
        original.row.recalled_by = row.batch_id
        return stored, True

    async def read_recall_keys(self, batch_id: str, start: int, end: int) -> list[RecallKey]:
        return self._batches[batch_id].keys[start:end]

    async def purge(self, ended_before: float) -> int:
        self._purge_events(ended_before)
        old = [
            batch_id
            for batch_id, batch in self._batches.items()
            if batch.row.end_time is not None and batch.row.end_time < ended_before
        ]
        for batch_id in old:
            self._forget(batch_id)
        in_use = {batch.list_id for batch in self._batches.values()}
        old_lists = [
            list_id
            for list_id, kept in self._lists.items()
            if kept.row.create_time < ended_before and list_id not in in_use
        ]
        for list_id in old_lists:
            await self.delete_list(list_id)
        return len(old) + len(old_lists)

    def _keep_ended(self, batch: _Batch) -> None:
        """Count a batch that just ended; forget the oldest-ended ones over the bounds."""
        cost = batch.cost()
        self._ended[batch.row.batch_id] = cost
        self._ended_bytes += cost
        ended = self._ended
        while len(ended) > 1 and (  # never the newest: its watchers are reading it
            len(ended) > self._max_ended_batches or self._ended_bytes > self._max_ended_bytes
        ):
            self._forget(next(iter(ended)))

    def _forget(self, batch_id: str) -> None:
        """Drop an ended batch and everything of it (purge, or over the bounds)."""
        row = self._batches.pop(batch_id).row
        if row.request_id:
            self._by_request.pop((row.caller, row.request_id), None)
        self._ended_bytes -= self._ended.pop(batch_id, 0)

    # -- recipient lists ----------------------------------------------------------------

    async def create_list(self, row: ListRow) -> None:
        self._lists[row.list_id] = _List(dataclasses.replace(row))

    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        kept = self._lists.get(list_id)
        if kept is None or kept.row.ready_time is not None:
            raise LookupError(f"no unfinished list {list_id!r}")
        first_index, row = kept.first_index, kept.row
        before = len(first_index)
        for position, recipient in enumerate(ids, row.received):
            first_index.setdefault(recipient, position)
        row.received += len(ids)
        row.count = len(first_index)
        return row.count - before

    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        kept = self._lists[row.list_id]
        if row.request_id:
            existing = self._lists_by_request.get((row.caller, row.request_id))
            if existing is not None and existing in self._lists:
                await self.delete_list(row.list_id)
                return dataclasses.replace(self._lists[existing].row), False
            self._lists_by_request[(row.caller, row.request_id)] = row.list_id
        stored = kept.row
        stored.request_id, stored.fingerprint = row.request_id, row.fingerprint
        stored.widest_id, stored.widest_index = row.widest_id, row.widest_index
        stored.ready_time = row.ready_time
        stored.longest = row.longest
        return dataclasses.replace(stored), True

    async def get_list(self, list_id: str) -> ListRow | None:
        kept = self._lists.get(list_id)
        return None if kept is None else dataclasses.replace(kept.row)

    async def delete_list(self, list_id: str) -> None:
        kept = self._lists.pop(list_id, None)
        if kept is not None and kept.row.request_id:
            key = (kept.row.caller, kept.row.request_id)
            if self._lists_by_request.get(key) == list_id:
                del self._lists_by_request[key]

    async def create_batch_from_list(
        self, row: BatchRow, list_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        kept = self._lists.get(list_id)
        if kept is None or kept.row.ready_time is None:
            raise LookupError(f"no recipient list {list_id!r}")
        if kept.ids is None or kept.indexes is None:
            # Dicts keep insertion order: first occurrences, in order, with their indexes.
            kept.ids, kept.indexes = list(kept.first_index), list(kept.first_index.values())
        ids, indexes = kept.ids, kept.indexes
        stored, created = await self.create_batch(row, (), None)
        if created:  # shares the list's ids, as the SQLite store shares its pages
            self._batches[row.batch_id] = dataclasses.replace(
                self._batches[row.batch_id], ids=ids, indexes=indexes, list_id=list_id
            )
        return stored, created
