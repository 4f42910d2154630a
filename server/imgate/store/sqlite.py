"""The SQLite store: the embedded default, one file, stdlib `sqlite3`.

WAL with `synchronous=FULL`: a commit is on disk when it returns, so a chunk marked
SENDING stays marked through kill -9 or power loss. All SQL runs off the event loop: one
writer thread that commits whatever is queued in one transaction (group commit: many
chunks' marks cost one fsync; each operation in its own savepoint so one failure costs
only its caller), and one reader thread with its own connection (WAL readers never wait
for the writer). A second gateway on the same file is refused: the file is locked with
flock for as long as the process lives, and a dead process's lock goes with it. All of
that is store/sqlite_threads.py's; the lists are store/sqlite_lists.py's, the webhook
outbox store/sqlite_outbox.py's; the SQL is store/sql/queries.sql's, the schema
store/sql/schema.py's.

Disk use stays bounded: a background thread checkpoints the WAL and truncates it when the
writer is idle or the WAL passes a hard bound (sqlite_threads.Checkpointer), and purge
gives the space of what it deleted back to the file system (incremental auto-vacuum,
_vacuum).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from imgate.store.pages import batch_pages, read_pages
from imgate.store.recall import read_key_pages, recall_pages
from imgate.store.records import (
    ENDED_STATES,
    RECIPIENT_PAGE,
    SENDABLE_STATES,
    SENDING,
    BatchCancelling,
    BatchRow,
    ChunkRow,
    Counts,
    Fenced,
    OutcomePage,
    RecallKey,
    Recovered,
    WebhookEvent,
    batch_order,
)
from imgate.store.sql.migrate import SQLITE_STEPS
from imgate.store.sql.queries import SQLITE_QUERIES as Q
from imgate.store.sqlite_outbox import SQLiteOutbox, write_events

SCHEMA_VERSION = len(SQLITE_STEPS)
# Purge frees pages of the file this many (4 KiB each) per writer transaction: ~15 ms.
_VACUUM_PAGES = 2048


def _row(values: Sequence[Any]) -> BatchRow:
    row = BatchRow(*values)
    row.bound = bool(row.bound)  # SQLite keeps booleans as integers
    return row


class SQLiteStore(SQLiteOutbox):
    """Batches in one SQLite file."""

    # -- batches ----------------------------------------------------------------------

    async def create_batch(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        owner: str = "",  # one process: every batch is its own
        first_chunk: ChunkRow | None = None,
    ) -> tuple[BatchRow, bool]:
        # Encoded here, on the loop's thread, so the writer's transaction stays short.
        pages = batch_pages(row.batch_id, ids, indexes)

        def insert_pages(conn: sqlite3.Connection) -> None:
            conn.executemany(Q["insert_pages"], pages)

        return await self._write(
            lambda conn: self._create(conn, row, insert_pages, first_chunk, owner)
        )

    async def create_batch_from_list(
        self,
        row: BatchRow,
        list_id: str,
        owner: str = "",  # one process: its own
    ) -> tuple[BatchRow, bool]:
        def link_list(conn: sqlite3.Connection) -> None:
            found = conn.execute(Q["ready_list_key"], (list_id,)).fetchone()
            if found is None:
                raise LookupError(f"no recipient list {list_id!r}")
            conn.execute(Q["link_list"], (row.batch_id, found[0]))

        return await self._write(lambda conn: self._create(conn, row, link_list))

    @staticmethod
    def _create(
        conn: sqlite3.Connection,
        row: BatchRow,
        insert_recipients: Callable[[sqlite3.Connection], None],
        first_chunk: ChunkRow | None = None,
        owner: str = "",
    ) -> tuple[BatchRow, bool]:
        """The batch row and its recipients (and its first chunk, SENDING), unless
        (caller, request_id) has a batch."""
        if row.request_id:
            found = conn.execute(Q["batch_by_request"], (row.caller, row.request_id)).fetchone()
            if found is not None:
                return _row(found), False
        planned_to, chunk_count = (0, 0) if first_chunk is None else (first_chunk.end, 1)
        stored = conn.execute(
            Q["create_batch"],
            (
                row.batch_id,
                row.caller,
                row.request_id,
                row.fingerprint,
                row.backend,
                row.spec,
                int(row.bound),
                row.total,
                row.duplicates_removed,
                row.create_time,
                row.send_before,
                row.state,
                planned_to,
                chunk_count,
                row.send_after,
                row.recall_of,
            ),
        ).fetchone()
        insert_recipients(conn)
        if first_chunk is not None:
            first_chunk.state = SENDING
            conn.execute(
                Q["insert_chunk"],
                (
                    first_chunk.batch_id,
                    first_chunk.number,
                    first_chunk.start,
                    first_chunk.end,
                    SENDING,
                    first_chunk.attempts,
                    owner,
                ),
            )
        return _row(stored), True

    async def probe_write(self) -> None:
        def op(conn: sqlite3.Connection) -> None:
            # Rewrites the header page: fails with "database or disk is full" when full.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")

        await self._write(op)

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        def op(conn: sqlite3.Connection) -> BatchRow | None:
            found = conn.execute(Q["batch"], (batch_id,)).fetchone()
            return None if found is None else _row(found)

        return await self._read(op)

    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            if before is None:
                rows = conn.execute(Q["caller_batches"], (caller, limit))
            else:
                rows = conn.execute(Q["caller_batches_before"], (caller, *before, limit))
            return [_row(r) for r in rows]

        return await self._read(op)

    async def unfinished_batches(self) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            return [_row(r) for r in conn.execute(Q["unfinished_batches"])]

        return await self._read(op)

    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE

        def op(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
            return conn.execute(Q["recipient_pages"], (batch_id, first, last)).fetchall()

        return read_pages(await self._read(op), start, end)

    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        def op(conn: sqlite3.Connection) -> list[ChunkRow]:
            return [ChunkRow(*r) for r in conn.execute(Q["batch_chunks"], (batch_id,))]

        return await self._read(op)

    # -- fenced chunk writes ----------------------------------------------------------
    # The usual path costs one statement per row touched: an UPDATE whose WHERE is the
    # fence (owner, state), falling back to the reads that explain a refusal.

    @staticmethod
    def _move_chunk(conn: sqlite3.Connection, chunk: ChunkRow, state: str, owner: str) -> None:
        """`chunk` to `state` for `owner` (its row inserted when it is the batch's next
        one), or Fenced: the chunk is missing out of order, final, or another's."""
        moved = conn.execute(
            Q["move_chunk"], (chunk.batch_id, chunk.number, state, owner, chunk.attempts)
        ).rowcount
        if moved:
            return
        advanced = conn.execute(
            Q["advance_planned"], (chunk.batch_id, chunk.end, chunk.number, chunk.start)
        ).rowcount
        if advanced != 1:
            found = conn.execute(Q["chunk_state"], (chunk.batch_id, chunk.number)).fetchone()
            if found is None:
                raise Fenced(f"chunk {chunk.number} does not follow the planned ones")
            raise Fenced(f"chunk {chunk.number} is {found[0]} by {found[1] or 'nobody'}")
        conn.execute(
            Q["insert_chunk"],
            (chunk.batch_id, chunk.number, chunk.start, chunk.end, state, chunk.attempts, owner),
        )

    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            found = conn.execute(Q["batch_state"], (chunk.batch_id,)).fetchone()
            if found is not None and found[0] not in SENDABLE_STATES:
                raise BatchCancelling(f"batch {chunk.batch_id} is cancelled")
            self._move_chunk(conn, chunk, SENDING, owner)

        await self._write(op)

    async def record(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> int:
        seq, _ = await self._write(self._record_op(chunk, final_state, page, counts, owner))
        self._recorded(chunk, seq, page)
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
        seq, ended = await self._write(
            self._record_op(chunk, final_state, page, counts, owner, ends=True, events=events)
        )
        assert ended is not None
        self._recorded(chunk, seq, page)
        self.tails.drop(chunk.batch_id)  # watchers of an ended batch read the file
        return seq, ended

    def _recorded(self, chunk: ChunkRow, seq: int, page: bytes) -> None:
        self.tails.add(chunk.batch_id, OutcomePage(seq, page, chunk.end - chunk.start))
        self.notifier.notify(chunk.batch_id)

    def _record_op(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
        ends: bool = False,
        events: Sequence[WebhookEvent] = (),
    ) -> Callable[[sqlite3.Connection], tuple[int, BatchRow | None]]:
        """The write of `record` (and with `ends`, of the batch's end and its `events`:
        record_last)."""
        counted = (
            chunk.batch_id,
            counts.accepted,
            counts.failed,
            counts.uncertain,
            counts.vendor_calls,
            self._clock(),
        )
        update = Q["count_last_outcomes" if ends else "count_outcomes"]

        def op(conn: sqlite3.Connection) -> tuple[int, BatchRow | None]:
            self._move_chunk(conn, chunk, final_state, owner)
            found = conn.execute(update, counted).fetchone()
            seq: int = found[0]
            conn.execute(Q["insert_outcomes"], (chunk.batch_id, seq, page, chunk.end - chunk.start))
            if not ends:
                return seq, None
            ended = _row(found[1:])
            assert ended.end_time is not None
            write_events(conn, chunk.batch_id, ended.end_time, events)
            return seq, ended

        return op

    async def set_state(
        self, batch_id: str, state: int, events: Sequence[WebhookEvent] = ()
    ) -> BatchRow | None:
        now = self._clock()
        end_time = now if state in ENDED_STATES else None

        def op(conn: sqlite3.Connection) -> BatchRow | None:
            changed = conn.execute(Q["set_state"], (batch_id, state, now, end_time)).rowcount
            if changed and end_time is not None:
                write_events(conn, batch_id, end_time, events)
            found = conn.execute(Q["batch"], (batch_id,)).fetchone()
            return None if found is None else _row(found)

        row = await self._write(op)
        if row is not None and row.ended:
            self.tails.drop(batch_id)  # watchers of an ended batch read the file
        self.notifier.notify(batch_id)
        return row

    async def recover(self, owner: str) -> Recovered:
        def op(conn: sqlite3.Connection) -> Recovered:
            reclaimed = conn.execute(Q["reclaim_chunks"]).rowcount
            sending = conn.execute(Q["hand_over_sending"], (owner,)).fetchall()
            conn.execute(Q["requeue_running"])
            to_close = conn.execute(Q["batches_to_close"]).fetchall()
            return Recovered([ChunkRow(*r) for r in sending], reclaimed, [r[0] for r in to_close])

        return await self._write(op)

    async def _read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int
    ) -> list[OutcomePage]:
        def op(conn: sqlite3.Connection) -> list[OutcomePage]:
            rows = conn.execute(Q["outcomes_after"], (batch_id, after_seq))
            found: list[OutcomePage] = []
            size = 0
            for seq, data, count in rows:  # stepped one row at a time: no more is read
                if found and size + len(data) > max_bytes:
                    break
                found.append(OutcomePage(seq, bytes(data), count))
                size += len(data)
            rows.close()
            return found

        return await self._read(op)

    # -- the queue --------------------------------------------------------------------

    async def claim_queued(
        self, backend: str, caller: str, owner: str, limit: int
    ) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            found = conn.execute(Q["claim_queued"], (backend, caller, self._clock(), limit))
            return sorted((_row(r) for r in found), key=batch_order)

        return await self._write(op)

    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            return {r[0] for r in conn.execute(Q["queued_callers"], (backend,))}

        return await self._read(op)

    async def queued_count(self, backend: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found: int = conn.execute(Q["queued_count"], (backend,)).fetchone()[0]
            return found

        return await self._read(op)

    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            return [_row(r) for r in conn.execute(Q["cancelling"], (limit,))]

        return await self._read(op)

    # -- scheduled batches ------------------------------------------------------------

    async def promote_due(self, owner: str, now: float) -> list[tuple[str, str]]:
        def op(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(Q["promote_due"], (now, self._clock())).fetchall()
            return [(backend, caller) for backend, caller in rows]

        return await self._write(op)

    async def next_scheduled(self, owner: str) -> float | None:
        def op(conn: sqlite3.Connection) -> float | None:
            found: float | None = conn.execute(Q["next_scheduled"]).fetchone()[0]
            return found

        return await self._read(op)

    # -- recall -----------------------------------------------------------------------

    async def create_recall(
        self, row: BatchRow, original_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        def op(conn: sqlite3.Connection) -> tuple[BatchRow, bool]:
            original = conn.execute(Q["original_for_recall"], (original_id,)).fetchone()
            if original is None:
                raise LookupError(f"no batch {original_id!r}")
            state, recalled_by = original
            existing = recalled_by or None
            if existing is None and row.request_id:
                found = conn.execute(Q["batch_by_request"], (row.caller, row.request_id))
                existing = next((r[0] for r in found), None)
            if existing is not None:
                found = conn.execute(Q["batch"], (existing,)).fetchone()
                if found is None:
                    raise LookupError(f"batch {original_id}'s recall {existing} is gone")
                return _row(found), False
            if state not in ENDED_STATES:
                raise ValueError(f"batch {original_id} has not ended")
            # The original's outcomes a page at a time (the cursor is stepped), its
            # recalled recipients written a page at a time.
            outcomes = (bytes(r[0]) for r in conn.execute(Q["outcome_pages"], (original_id,)))
            row.total = 0
            for recipients, keys, count in recall_pages(row.batch_id, outcomes):
                conn.execute(Q["insert_pages"], recipients)
                conn.execute(Q["insert_recall_keys"], keys)
                row.total += count
            stored, _ = self._create(conn, row, lambda _: None)
            conn.execute(Q["mark_recalled"], (original_id, row.batch_id))
            return stored, True

        return await self._write(op)

    async def read_recall_keys(self, batch_id: str, start: int, end: int) -> list[RecallKey]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE

        def op(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            return conn.execute(Q["recall_key_pages"], (batch_id, first, last)).fetchall()

        return read_key_pages(await self._read(op), start, end)

    # -- retention --------------------------------------------------------------------

    async def purge(self, ended_before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            old = [(r[0],) for r in conn.execute(Q["ended_batches"], (ended_before,))]
            for statement in Q.all("delete_batch"):
                conn.executemany(statement, old)
            conn.execute(Q["purge_webhook_events"], (ended_before,))
            return len(old)

        purged = await self._write(op)
        old_lists = await self._read(
            lambda conn: [r[0] for r in conn.execute(Q["old_lists"], (ended_before,))]
        )
        for list_id in old_lists:
            await self.delete_list(list_id)
        if purged or old_lists:
            await self._vacuum()
        return purged + len(old_lists)

    async def _vacuum(self) -> None:
        """Give the pages that deletes freed back to the file system (the file is in
        incremental auto-vacuum mode: SQLite's schema version 3). Freed pages are otherwise
        only reused, so the file would stay at its largest. _VACUUM_PAGES at a time, each
        step one writer operation, so that the writer serves others in between."""

        def step(conn: sqlite3.Connection) -> int:
            free: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            # One page per statement: Python's sqlite3 steps a statement once, and this
            # pragma moves one page per step, so "(N)" would free one page anyway.
            for _ in range(min(free, _VACUUM_PAGES)):
                conn.execute("PRAGMA incremental_vacuum(1)")
            left: int = conn.execute("PRAGMA freelist_count").fetchone()[0]
            return left if left < free else 0  # no progress (not incremental): stop

        while await self._write(step):
            pass
