"""The PostgreSQL store (15+, asyncpg): one database shared by several gateway replicas.

Same tables as SQLite, plus an owner per batch and a `replicas` table of heartbeats.
Times that decide liveness come from the database clock (`now()`), never a replica's.
Its connections, migrations, heartbeats and adoption are store/postgres_replicas.py's,
its lists store/postgres_lists.py's, its webhook outbox store/postgres_outbox.py's, its
SQL store/sql/queries.sql's.

- Fencing: every chunk write must be by its batch's owner (the row locked `FOR NO KEY
  UPDATE` by the one-statement forms, read `FOR KEY SHARE` by the slow path); the chunk
  row itself must be PLANNED or CLAIMED, or SENDING by the same owner at no later attempt.
  A replica presumed dead that wakes up gets `Fenced`, for new chunk rows too.
- The steps of a small send are one statement each, autocommitted (issue 20):
  create_small_batch, write_ahead, record, set_state.
- A batch's writes from one process go one at a time, in order (new chunks must be
  inserted in order), as SQLite's single writer thread does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg

from imgate.store.pages import batch_pages, read_pages
from imgate.store.postgres_outbox import PostgresOutbox, event_arrays
from imgate.store.postgres_replicas import Connection
from imgate.store.recall import PageRows, RecallPager, read_key_pages
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
    WebhookEvent,
    batch_order,
)
from imgate.store.sql.migrate import POSTGRESQL_STEPS
from imgate.store.sql.queries import POSTGRESQL_QUERIES as Q

SCHEMA_VERSION = len(POSTGRESQL_STEPS)


def _row(record: asyncpg.Record) -> BatchRow:
    return BatchRow(*record.values())


def _row_of(values: Sequence[object]) -> BatchRow:
    return BatchRow(*values)  # type: ignore[arg-type]


def _chunk(record: asyncpg.Record) -> ChunkRow:
    return ChunkRow(*record.values())


class _RequestIdTaken(Exception):
    """A recall batch's request_id was taken by another batch while it was made."""


def _batch_args(row: BatchRow, owner: str) -> tuple[object, ...]:
    """$1..$15 of create_batch and create_small_batch."""
    return (
        row.batch_id,
        row.caller,
        row.request_id,
        row.fingerprint,
        row.backend,
        row.spec,
        row.bound,
        row.total,
        row.duplicates_removed,
        row.create_time,
        row.send_before,
        row.state,
        owner,
        row.send_after,
        row.recall_of,
    )


class PostgresStore(PostgresOutbox):
    """Batches in a PostgreSQL schema, shared by every replica given the same URL."""

    def __init__(self, url: str, lease_s: float = 30.0) -> None:
        """`lease_s`: how old a replica's heartbeat is before `recover` takes its batches."""
        super().__init__(url, lease_s)
        # One writer at a time per batch in this process, in the order they asked: a
        # batch's new chunks must be inserted in order (chunk n + 1 after chunk n), which
        # SQLite's single writer thread gives for free and a pool of connections does not.
        self._writers: dict[str, asyncio.Lock] = {}

    # -- batches ----------------------------------------------------------------------

    async def create_batch(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        owner: str = "",
        first_chunk: ChunkRow | None = None,
    ) -> tuple[BatchRow, bool]:
        pages = batch_pages(row.batch_id, ids, indexes)
        if len(pages) == 1:
            return await self._create_small(row, owner, pages[0][2:], first_chunk)

        async def insert_pages(conn: Connection) -> None:
            await conn.copy_records_to_table(
                "recipient_pages",
                records=pages,
                columns=("batch_id", "page", "ids", "indexes"),
                schema_name=self.schema,
            )

        assert first_chunk is None, "a batch of one vendor call has one page"
        return await self._create(row, owner, insert_pages)

    async def _create_small(
        self,
        row: BatchRow,
        owner: str,
        page: tuple[str, str],
        first_chunk: ChunkRow | None,
    ) -> tuple[BatchRow, bool]:
        """A batch of one page (and its first chunk, SENDING) in one statement."""
        planned_to, chunk_count = (0, 0) if first_chunk is None else (first_chunk.end, 1)
        created = self._committed(
            await self.pool.fetchrow(
                Q["create_small_batch"], *_batch_args(row, owner), planned_to, chunk_count, *page
            )
        )
        if created is None:
            found = await self.pool.fetchrow(Q["batch_by_request"], row.caller, row.request_id)
            assert found is not None
            return _row(found), False
        if first_chunk is not None:
            first_chunk.state = SENDING
        return _row(created), True

    async def create_batch_from_list(
        self, row: BatchRow, list_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        async def link_list(conn: Connection) -> None:
            key = await conn.fetchval(Q["ready_list_key"], list_id)
            if key is None:
                raise LookupError(f"no recipient list {list_id!r}")
            await conn.execute(Q["link_list"], row.batch_id, key)

        return await self._create(row, owner, link_list)

    async def _create(
        self,
        row: BatchRow,
        owner: str,
        insert_recipients: Callable[[Connection], Awaitable[None]],
    ) -> tuple[BatchRow, bool]:
        """The batch row and its recipients, unless (caller, request_id) has a batch."""
        async with self._transaction() as conn:
            created = await conn.fetchrow(Q["create_batch"], *_batch_args(row, owner))
            if created is None:  # the request_id's batch: read the winner's
                found = await conn.fetchrow(Q["batch_by_request"], row.caller, row.request_id)
                assert found is not None
                return _row(found), False
            await insert_recipients(conn)
        return _row(created), True

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        found = await self.pool.fetchrow(Q["batch"], batch_id)
        return None if found is None else _row(found)

    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        if before is None:
            rows = await self.pool.fetch(Q["caller_batches"], caller, limit)
        else:
            rows = await self.pool.fetch(Q["caller_batches_before"], caller, *before, limit)
        return [_row(r) for r in rows]

    async def unfinished_batches(self) -> list[BatchRow]:
        return [_row(r) for r in await self.pool.fetch(Q["unfinished_batches"])]

    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE
        rows = await self.pool.fetch(Q["recipient_pages"], batch_id, first, last)
        return read_pages(rows, start, end)

    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        return [_chunk(r) for r in await self.pool.fetch(Q["batch_chunks"], batch_id)]

    # -- fenced chunk writes ----------------------------------------------------------

    @staticmethod
    async def _take(conn: Connection, chunk: ChunkRow, state: str, owner: str) -> None:
        """In a transaction: move `chunk` to `state` for `owner` (inserting the row when
        it is the batch's next one), or raise Fenced having changed nothing."""
        await conn.execute(Q["take_unowned"], chunk.batch_id, owner)
        batch_owner = await conn.fetchval(Q["batch_owner"], chunk.batch_id)
        if batch_owner != owner:
            raise Fenced(f"batch {chunk.batch_id} is owned by {batch_owner or 'nobody'}")
        moved = await conn.execute(
            Q["move_chunk"], chunk.batch_id, chunk.number, state, owner, chunk.attempts
        )
        if moved == "UPDATE 1":
            return
        advanced = await conn.execute(
            Q["advance_planned"], chunk.batch_id, chunk.end, chunk.number, chunk.start
        )
        if advanced != "UPDATE 1":
            found = await conn.fetchrow(Q["chunk_state"], chunk.batch_id, chunk.number)
            if found is None:
                raise Fenced(f"chunk {chunk.number} does not follow the planned ones")
            raise Fenced(
                f"chunk {chunk.number} is {found['state']} by {found['owner'] or 'nobody'} "
                f"(attempt {found['attempts']})"
            )
        await conn.execute(
            Q["insert_chunk"],
            chunk.batch_id,
            chunk.number,
            chunk.start,
            chunk.end,
            state,
            chunk.attempts,
            owner,
        )

    @contextlib.asynccontextmanager
    async def _writer(self, batch_id: str) -> AsyncIterator[None]:
        lock = self._writers.setdefault(batch_id, asyncio.Lock())
        async with lock:
            yield

    def forget(self, batch_id: str) -> None:
        super().forget(batch_id)
        self._writers.pop(batch_id, None)

    def tracked(self) -> dict[str, int]:
        return {**super().tracked(), "store_writer_locks": len(self._writers)}

    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        args = (chunk.batch_id, chunk.number, owner, chunk.attempts, chunk.start, chunk.end)
        async with self._writer(chunk.batch_id):
            if self._committed(await self.pool.fetchval(Q["write_ahead"], *args)):
                return
            state = await self.pool.fetchval(Q["batch_state"], chunk.batch_id)
            if state is not None and state not in SENDABLE_STATES:
                raise BatchCancelling(f"batch {chunk.batch_id} is cancelled")
            await self._record_slowly(chunk, SENDING, owner)
            if not self._committed(await self.pool.fetchval(Q["write_ahead"], *args)):
                raise Fenced(f"batch {chunk.batch_id} changed hands while writing ahead")

    async def record(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> int:
        seq, _ = await self._record(chunk, final_state, page, counts, owner, ends=False)
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
        seq, ended = await self._record(
            chunk, final_state, page, counts, owner, ends=True, events=events
        )
        assert ended is not None
        self.forget(chunk.batch_id)
        return seq, ended

    async def _record(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
        ends: bool,
        events: Sequence[WebhookEvent] = (),
    ) -> tuple[int, BatchRow | None]:
        """The usual record in one statement (with `ends`, the batch's end and its
        `events` too); when it changes nothing, `_record_slowly` decides: a batch without
        owner (taken, then the statement again), or Fenced."""
        args = (
            chunk.batch_id,
            chunk.number,
            final_state,
            owner,
            chunk.attempts,
            chunk.start,
            chunk.end,
            counts.accepted,
            counts.failed,
            counts.uncertain,
            counts.vendor_calls,
            page,
            ends,
            self._channel,
            *event_arrays(events),
        )
        async with self._writer(chunk.batch_id):
            found = self._committed(await self.pool.fetchrow(Q["record"], *args))
            if found is None:
                await self._record_slowly(chunk, final_state, owner)
                # The batch had no owner and is `owner`'s now: the usual statement works.
                found = self._committed(await self.pool.fetchrow(Q["record"], *args))
                if found is None:
                    raise Fenced(f"batch {chunk.batch_id} changed hands while recording")
        values = list(found.values())
        seq: int = values[0]
        self.tails.add(chunk.batch_id, OutcomePage(seq, page, chunk.end - chunk.start))
        self.notifier.notify(chunk.batch_id)
        return seq, _row_of(values[1:-1]) if ends else None

    async def _record_slowly(self, chunk: ChunkRow, state: str, owner: str) -> None:
        """Why the usual record changed nothing: raises Fenced, or takes a batch that has
        no owner for `owner` (then nothing else is changed here)."""
        async with self._transaction() as conn:
            if await conn.execute(Q["take_unowned"], chunk.batch_id, owner) == "UPDATE 1":
                return
            await self._take(conn, chunk, state, owner)  # raises Fenced
            raise Fenced(f"chunk {chunk.number} of {chunk.batch_id} cannot be recorded now")

    async def set_state(
        self, batch_id: str, state: int, events: Sequence[WebhookEvent] = ()
    ) -> BatchRow | None:
        ends = state in ENDED_STATES
        found = self._committed(
            await self.pool.fetchrow(
                Q["set_state"], batch_id, state, ends, self._channel, *event_arrays(events)
            )
        )
        if found is not None and found["state"] in ENDED_STATES:
            self.forget(batch_id)
        self.notifier.notify(batch_id)
        return None if found is None else _row_of(list(found.values())[:-1])

    # -- outcomes and retention -------------------------------------------------------

    async def _read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int
    ) -> list[OutcomePage]:
        # Pages hold one chunk (up to ~40 KB): read about what fits, then trim to bytes.
        rows = await self.pool.fetch(
            Q["outcomes_after"], batch_id, after_seq, max(1, max_bytes // 16384)
        )
        found: list[OutcomePage] = []
        size = 0
        for r in rows:
            data = bytes(r["data"])
            if found and size + len(data) > max_bytes:
                break
            found.append(OutcomePage(r["seq"], data, r["count"]))
            size += len(data)
        return found

    async def purge(self, ended_before: float) -> int:
        async with self._transaction() as conn:
            old = [r["batch_id"] for r in await conn.fetch(Q["delete_ended_batches"], ended_before)]
            for statement in Q.all("delete_batch_rows"):
                await conn.execute(statement, old)
            await conn.execute(Q["purge_webhook_events"], ended_before)
        old_lists = await self.pool.fetch(Q["old_lists"], ended_before)
        for found in old_lists:
            await self.delete_list(found["list_id"])
        return len(old) + len(old_lists)

    # -- the queue --------------------------------------------------------------------

    async def claim_queued(
        self, backend: str, caller: str, owner: str, limit: int
    ) -> list[BatchRow]:
        found = self._committed(
            await self.pool.fetch(Q["claim_queued"], backend, owner, caller, limit)
        )
        return sorted((_row(r) for r in found), key=batch_order)

    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        rows = await self.pool.fetch(Q["queued_callers"], backend, owner)
        return {r["caller"] for r in rows}

    async def queued_count(self, backend: str) -> int:
        count: int = await self.pool.fetchval(Q["queued_count"], backend)
        return count

    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        return [_row(r) for r in await self.pool.fetch(Q["cancelling"], owner, limit)]

    # -- scheduled batches ------------------------------------------------------------

    async def promote_due(self, owner: str, now: float) -> list[tuple[str, str]]:
        rows = self._committed(await self.pool.fetch(Q["promote_due"], now, owner))
        return [(r["backend"], r["caller"]) for r in rows]

    async def next_scheduled(self, owner: str) -> float | None:
        found: float | None = await self.pool.fetchval(Q["next_scheduled"], owner)
        return found

    # -- recall -----------------------------------------------------------------------

    async def create_recall(
        self, row: BatchRow, original_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        try:
            return await self._create_recall(row, original_id, owner)
        except _RequestIdTaken:  # rolled back: that batch is the answer
            found = await self.pool.fetchrow(Q["batch_by_request"], row.caller, row.request_id)
            assert found is not None
            return _row(found), False

    async def _create_recall(
        self, row: BatchRow, original_id: str, owner: str
    ) -> tuple[BatchRow, bool]:
        async with self._transaction() as conn:
            original = await conn.fetchrow(Q["original_for_recall"], original_id)
            if original is None:
                raise LookupError(f"no batch {original_id!r}")
            found = None
            if original["recalled_by"]:
                found = await conn.fetchrow(Q["batch"], original["recalled_by"])
                if found is None:
                    raise LookupError(f"batch {original_id}'s recall is gone")
            elif row.request_id:
                found = await conn.fetchrow(Q["batch_by_request"], row.caller, row.request_id)
            if found is not None:
                return _row(found), False
            if original["state"] not in ENDED_STATES:
                raise ValueError(f"batch {original_id} has not ended")
            row.total = 0
            # The original's outcomes through a cursor, 64 pages at a time; the recalled
            # recipients written a page at a time.
            pager = RecallPager(row.batch_id)
            async for record in conn.cursor(Q["outcome_pages"], original_id, prefetch=64):
                for rows in pager.add(bytes(record["data"])):
                    row.total += await self._insert_recall_page(conn, rows)
            for rows in pager.finish():
                row.total += await self._insert_recall_page(conn, rows)
            created = await conn.fetchrow(Q["create_batch"], *_batch_args(row, owner))
            if created is None:
                # The request_id was taken meanwhile, by the recall of another batch.
                raise _RequestIdTaken
            await conn.execute(Q["mark_recalled"], original_id, row.batch_id)
        return _row(created), True

    @staticmethod
    async def _insert_recall_page(conn: Connection, rows: PageRows) -> int:
        recipients, keys, count = rows
        await conn.execute(Q["insert_pages"], *recipients)
        await conn.execute(Q["insert_recall_keys"], *keys)
        return count

    async def read_recall_keys(self, batch_id: str, start: int, end: int) -> list[RecallKey]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE
        rows = await self.pool.fetch(Q["recall_key_pages"], batch_id, first, last)
        return read_key_pages(((r["page"], r["keys"]) for r in rows), start, end)
