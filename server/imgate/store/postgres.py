"""The PostgreSQL store (15+, asyncpg): one database shared by several gateway replicas.

Same tables as SQLite, plus an owner per batch and a `replicas` table of heartbeats.
Times that decide liveness come from the database clock (`now()`), never a replica's.

- The schema is created and migrated by the gateway at start-up, one version at a time
  (`schema_version`), under an advisory lock so replicas starting together do not race.
  The schema is the first of the URL's `search_path` (asyncpg passes unknown URL query
  parameters to the server as settings: `?search_path=imgate` works); it is created
  when missing.
- Fencing: every chunk write first reads its batch's owner `FOR KEY SHARE` and must be
  that owner; the chunk row itself must be PLANNED or CLAIMED, or SENDING by the same
  owner at no later attempt. A replica presumed dead that wakes up gets `Fenced`, for new
  chunk rows too. An adopter locks the batch `FOR UPDATE SKIP LOCKED`, which waits for no
  writer and is never interleaved with one.
- `adopt` runs under `pg_try_advisory_xact_lock`: one sweeper at a time per schema.
- A batch's writes from one process go one at a time, in order (new chunks must be
  inserted in order), as SQLite's single writer thread does.
- Watchers on every replica are woken by `LISTEN/NOTIFY` (a channel per schema, payload:
  the batch id) on one connection per gateway, reopened by the heartbeat when lost;
  `BatchService.watch` still polls, should a notification be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg

from imgate.store.base import (
    CLAIMED,
    ENDED_STATES,
    PLANNED,
    RECIPIENT_PAGE,
    SENDING,
    UNFINISHED_STATES,
    BatchRow,
    ChunkRow,
    Counts,
    Fenced,
    OutcomePage,
)
from imgate.store.pages import decode_recipients, encode_recipients
from imgate.store.postgres_lists import PostgresLists
from imgate.store.postgres_replicas import Connection
from imgate.store.sql.migrate import POSTGRESQL_STEPS
from imgate.v1 import gateway_pb2 as pb

SCHEMA_VERSION = len(POSTGRESQL_STEPS)

# The batches table has BatchRow's fields as its first columns, in its order.
_BATCH_COLUMNS = ", ".join(f.name for f in dataclasses.fields(BatchRow))
_CHUNK_COLUMNS = "batch_id, number, start_pos, end_pos, state, attempts, owner"
_UNFINISHED = "(" + ", ".join(str(s) for s in sorted(UNFINISHED_STATES)) + ")"
_ENDED = "(" + ", ".join(str(s) for s in sorted(ENDED_STATES)) + ")"


def _row(record: asyncpg.Record) -> BatchRow:
    return BatchRow(*record.values())


def _row_of(values: Sequence[object]) -> BatchRow:
    return BatchRow(*values)  # type: ignore[arg-type]


def _chunk(record: asyncpg.Record) -> ChunkRow:
    return ChunkRow(*record.values())


class PostgresStore(PostgresLists):
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
        pages = [
            (
                row.batch_id,
                number,
                *encode_recipients(
                    ids[start : start + RECIPIENT_PAGE],
                    None if indexes is None else indexes[start : start + RECIPIENT_PAGE],
                ),
            )
            for number, start in enumerate(range(0, len(ids), RECIPIENT_PAGE))
        ]
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
        """A batch of one page (and its first chunk, SENDING) in one statement: no
        transaction to open and commit, no COPY (which asks the server for the table's
        columns first)."""
        planned_to, chunk_count = (0, 0) if first_chunk is None else (first_chunk.end, 1)
        created = await self.pool.fetchrow(
            f"WITH b AS (INSERT INTO batches ({_BATCH_COLUMNS}, owner) VALUES "
            "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,0,0,0,0,$10,NULL,$14,$15,1,$13) "
            "ON CONFLICT (caller, request_id) WHERE request_id <> '' DO NOTHING "
            f"RETURNING {_BATCH_COLUMNS}), "
            "p AS (INSERT INTO recipient_pages (batch_id, page, ids, indexes) "
            "SELECT batch_id, 0, $16, $17 FROM b), "
            f"c AS (INSERT INTO chunks ({_CHUNK_COLUMNS}) "
            f"SELECT batch_id, 0, 0, $14, '{SENDING}', 1, $13 FROM b WHERE $15 = 1) "
            "SELECT * FROM b",
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
            planned_to,
            chunk_count,
            *page,
        )
        if created is None:
            found = await self.pool.fetchrow(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = $1 AND request_id = $2",
                row.caller,
                row.request_id,
            )
            assert found is not None
            return _row(found), False
        if first_chunk is not None:
            first_chunk.state = SENDING
        return _row(created), True

    async def create_batch_from_list(
        self, row: BatchRow, list_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        async def link_list(conn: Connection) -> None:
            key = await conn.fetchval(
                "SELECT list_key FROM recipient_lists "
                "WHERE list_id = $1 AND ready_time IS NOT NULL FOR KEY SHARE",
                list_id,
            )
            if key is None:
                raise LookupError(f"no recipient list {list_id!r}")
            await conn.execute("INSERT INTO batch_lists VALUES ($1, $2)", row.batch_id, key)

        return await self._create(row, owner, link_list)

    async def _create(
        self,
        row: BatchRow,
        owner: str,
        insert_recipients: Callable[[Connection], Awaitable[None]],
    ) -> tuple[BatchRow, bool]:
        """The batch row and its recipients, unless (caller, request_id) has a batch."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Two replicas racing one request_id: the second waits for the first's
            # commit, does nothing, and reads the winner's batch.
            created = await conn.fetchrow(
                f"INSERT INTO batches ({_BATCH_COLUMNS}, owner) VALUES "
                "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,0,0,0,0,$10,NULL,0,0,1,$13) "
                "ON CONFLICT (caller, request_id) WHERE request_id <> '' DO NOTHING "
                f"RETURNING {_BATCH_COLUMNS}",
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
            )
            if created is None:
                found = await conn.fetchrow(
                    f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = $1 AND request_id = $2",
                    row.caller,
                    row.request_id,
                )
                assert found is not None
                return _row(found), False
            await insert_recipients(conn)
        return _row(created), True

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        found = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = $1", batch_id
        )
        return None if found is None else _row(found)

    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        if before is None:
            rows = await self.pool.fetch(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = $1 "
                "ORDER BY create_time DESC, batch_id DESC LIMIT $2",
                caller,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = $1 "
                "AND (create_time, batch_id) < ($2, $3) "
                "ORDER BY create_time DESC, batch_id DESC LIMIT $4",
                caller,
                before[0],
                before[1],
                limit,
            )
        return [_row(r) for r in rows]

    async def unfinished_batches(self) -> list[BatchRow]:
        rows = await self.pool.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE state IN {_UNFINISHED} "
            "ORDER BY create_time, batch_id"
        )
        return [_row(r) for r in rows]

    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE
        # A batch has its own pages, or (made from a list) the list's: one of the two.
        rows = await self.pool.fetch(
            "SELECT page, ids, indexes FROM recipient_pages "
            "WHERE batch_id = $1 AND page BETWEEN $2 AND $3 "
            "UNION ALL SELECT page, ids, indexes FROM list_pages WHERE list_key = "
            "(SELECT list_key FROM batch_lists WHERE batch_id = $1) "
            "AND page BETWEEN $2 AND $3 ORDER BY page",
            batch_id,
            first,
            last,
        )
        ids: list[str] = []
        indexes: list[int] = []
        for page, page_ids, page_indexes in rows:
            decoded_ids, decoded_indexes = decode_recipients(
                page_ids, page_indexes, page * RECIPIENT_PAGE
            )
            ids.extend(decoded_ids)
            indexes.extend(decoded_indexes)
        offset = start - first * RECIPIENT_PAGE
        return ids[offset : offset + end - start], indexes[offset : offset + end - start]

    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        rows = await self.pool.fetch(
            f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE batch_id = $1 ORDER BY number",
            batch_id,
        )
        return [_chunk(r) for r in rows]

    # -- fenced chunk writes ----------------------------------------------------------

    @staticmethod
    async def _take(conn: Connection, chunk: ChunkRow, state: str, owner: str) -> None:
        """In a transaction: move `chunk` to `state` for `owner` (inserting the row when
        it is the batch's next one), or raise Fenced having changed nothing."""
        # A batch created without an owner is taken by its first writer.
        await conn.execute(
            "UPDATE batches SET owner = $2 WHERE batch_id = $1 AND owner = ''",
            chunk.batch_id,
            owner,
        )
        # KEY SHARE: writers of one batch do not wait for each other, an adopter's
        # FOR UPDATE does not interleave with them.
        batch_owner = await conn.fetchval(
            "SELECT owner FROM batches WHERE batch_id = $1 FOR KEY SHARE", chunk.batch_id
        )
        if batch_owner != owner:
            raise Fenced(f"batch {chunk.batch_id} is owned by {batch_owner or 'nobody'}")
        updated = await conn.execute(
            "UPDATE chunks SET state = $3, owner = $4, attempts = $5 "
            "WHERE batch_id = $1 AND number = $2 AND (state IN ($6, $7) "
            "OR (state = $8 AND owner = $4 AND attempts <= $5))",
            chunk.batch_id,
            chunk.number,
            state,
            owner,
            chunk.attempts,
            PLANNED,
            CLAIMED,
            SENDING,
        )
        if updated == "UPDATE 1":
            return
        advanced = await conn.execute(
            "UPDATE batches SET chunk_count = chunk_count + 1, planned_to = $2 "
            "WHERE batch_id = $1 AND chunk_count = $3 AND planned_to = $4",
            chunk.batch_id,
            chunk.end,
            chunk.number,
            chunk.start,
        )
        if advanced != "UPDATE 1":
            found = await conn.fetchrow(
                "SELECT state, owner, attempts FROM chunks WHERE batch_id = $1 AND number = $2",
                chunk.batch_id,
                chunk.number,
            )
            if found is None:
                raise Fenced(f"chunk {chunk.number} does not follow the planned ones")
            raise Fenced(
                f"chunk {chunk.number} is {found['state']} by {found['owner'] or 'nobody'} "
                f"(attempt {found['attempts']})"
            )
        await conn.execute(
            f"INSERT INTO chunks ({_CHUNK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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

    # write_ahead in one statement, as _RECORD below (without counts and page).
    _WRITE_AHEAD = (
        "WITH own AS (SELECT chunk_count, planned_to FROM batches "
        "WHERE batch_id = $1 AND owner = $3 FOR NO KEY UPDATE), "
        f"upd AS (UPDATE chunks SET state = '{SENDING}', owner = $3, attempts = $4 "
        "WHERE batch_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM own) "
        f"AND (state IN ('{PLANNED}', '{CLAIMED}') "
        f"OR (state = '{SENDING}' AND owner = $3 AND attempts <= $4)) RETURNING 1), "
        f"ins AS (INSERT INTO chunks ({_CHUNK_COLUMNS}) "
        f"SELECT $1, $2, $5, $6, '{SENDING}', $4, $3 FROM own "
        "WHERE chunk_count = $2 AND planned_to = $5 AND NOT EXISTS (SELECT 1 FROM upd) "
        "RETURNING 1), "
        "b AS (UPDATE batches SET chunk_count = chunk_count + 1, planned_to = $6 "
        "WHERE batch_id = $1 AND EXISTS (SELECT 1 FROM ins) RETURNING 1) "
        "SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM b)"
    )

    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        args = (chunk.batch_id, chunk.number, owner, chunk.attempts, chunk.start, chunk.end)
        async with self._writer(chunk.batch_id):
            if await self.pool.fetchval(self._WRITE_AHEAD, *args):
                return
            await self._record_slowly(chunk, SENDING, owner)
            if not await self.pool.fetchval(self._WRITE_AHEAD, *args):
                raise Fenced(f"batch {chunk.batch_id} changed hands while writing ahead")

    async def record(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> int:
        seq, _ = await self._record(chunk, final_state, page, counts, owner, ends=False)
        return seq

    async def record_last(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> tuple[int, BatchRow]:
        seq, ended = await self._record(chunk, final_state, page, counts, owner, ends=True)
        assert ended is not None
        self.forget(chunk.batch_id)
        return seq, ended

    # The usual record in one statement (issue 20: one statement per step, no BEGIN and
    # COMMIT): lock the batch row if `owner` owns it, move the chunk (an existing row
    # that is PLANNED, CLAIMED or SENDING by the owner, or a new row that follows the
    # planned ones), add the counts (and end the batch), store the page, notify. When it
    # changes nothing, `_record_slowly` decides: a batch without owner, or Fenced.
    _RECORD = (
        "WITH own AS (SELECT chunk_count, planned_to FROM batches "
        "WHERE batch_id = $1 AND owner = $4 FOR NO KEY UPDATE), "
        "upd AS (UPDATE chunks SET state = $3, owner = $4, attempts = $5 "
        "WHERE batch_id = $1 AND number = $2 AND EXISTS (SELECT 1 FROM own) "
        f"AND (state IN ('{PLANNED}', '{CLAIMED}') "
        f"OR (state = '{SENDING}' AND owner = $4 AND attempts <= $5)) RETURNING 1), "
        f"ins AS (INSERT INTO chunks ({_CHUNK_COLUMNS}) "
        "SELECT $1, $2, $6, $7, $3, $5, $4 FROM own "
        "WHERE chunk_count = $2 AND planned_to = $6 AND NOT EXISTS (SELECT 1 FROM upd) "
        "RETURNING 1), "
        "b AS (UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + $8, "
        "failed = failed + $9, uncertain = uncertain + $10, "
        "vendor_calls = vendor_calls + $11, "
        "update_time = extract(epoch FROM clock_timestamp()), "
        "chunk_count = chunk_count + (SELECT count(*) FROM ins), "
        "planned_to = CASE WHEN EXISTS (SELECT 1 FROM ins) THEN $7 ELSE planned_to END, "
        f"state = CASE WHEN NOT $13 THEN state WHEN state = {pb.BATCH_STATE_CANCELLING} "
        f"THEN {pb.BATCH_STATE_CANCELLED} ELSE {pb.BATCH_STATE_DONE} END, "
        "end_time = CASE WHEN $13 THEN extract(epoch FROM clock_timestamp()) "
        "ELSE end_time END "
        "WHERE batch_id = $1 AND (EXISTS (SELECT 1 FROM upd) OR EXISTS (SELECT 1 FROM ins)) "
        f"RETURNING next_seq - 1 AS seq, {_BATCH_COLUMNS}), "
        "o AS (INSERT INTO outcomes (batch_id, seq, data, count) "
        "SELECT $1, seq, $12, $7 - $6 FROM b) "
        "SELECT b.*, pg_notify($14, $1) FROM b"
    )

    async def _record(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
        ends: bool,
    ) -> tuple[int, BatchRow | None]:
        async with self._writer(chunk.batch_id):
            found = await self.pool.fetchrow(
                self._RECORD,
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
            )
            if found is None:
                await self._record_slowly(chunk, final_state, owner)
                # The batch had no owner and is `owner`'s now: the usual statement works.
                found = await self.pool.fetchrow(
                    self._RECORD,
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
                )
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
        async with self.pool.acquire() as conn, conn.transaction():
            taken = await conn.execute(
                "UPDATE batches SET owner = $2 WHERE batch_id = $1 AND owner = ''",
                chunk.batch_id,
                owner,
            )
            if taken == "UPDATE 1":
                return
            await self._take(conn, chunk, state, owner)  # raises Fenced
            raise Fenced(f"chunk {chunk.number} of {chunk.batch_id} cannot be recorded now")

    async def set_state(self, batch_id: str, state: int) -> BatchRow | None:
        keep_cancelling = (
            f" AND state <> {pb.BATCH_STATE_CANCELLING}" if state == pb.BATCH_STATE_RUNNING else ""
        )
        # One statement: the row as updated, or as it is when the update does not apply.
        found = await self.pool.fetchrow(
            "WITH u AS (UPDATE batches SET state = $2, "
            "update_time = extract(epoch FROM clock_timestamp()), "
            "end_time = CASE WHEN $3 THEN extract(epoch FROM clock_timestamp()) END "
            f"WHERE batch_id = $1 AND state NOT IN {_ENDED}{keep_cancelling} "
            f"RETURNING {_BATCH_COLUMNS}) "
            f"SELECT x.*, pg_notify($4, $1) FROM (SELECT * FROM u UNION ALL "
            f"SELECT {_BATCH_COLUMNS} FROM batches "
            "WHERE batch_id = $1 AND NOT EXISTS (SELECT 1 FROM u)) x",
            batch_id,
            state,
            state in ENDED_STATES,
            self._channel,
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
            "SELECT seq, data, count FROM outcomes WHERE batch_id = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3",
            batch_id,
            after_seq,
            max(1, max_bytes // 16384),
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

    # -- the queue --------------------------------------------------------------------

    async def claim_next(self, backend: str, caller: str, owner: str) -> BatchRow | None:
        found = await self.pool.fetchrow(
            f"UPDATE batches SET state = {pb.BATCH_STATE_RUNNING}, "
            "update_time = extract(epoch FROM clock_timestamp()) "
            "WHERE batch_id = (SELECT batch_id FROM batches WHERE backend = $1 AND "
            f"owner = $2 AND caller = $3 AND state = {pb.BATCH_STATE_QUEUED} "
            "ORDER BY create_time, batch_id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"AND state = {pb.BATCH_STATE_QUEUED} RETURNING {_BATCH_COLUMNS}",
            backend,
            owner,
            caller,
        )
        return None if found is None else _row(found)

    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT caller FROM batches WHERE backend = $1 AND owner = $2 "
            f"AND state = {pb.BATCH_STATE_QUEUED}",
            backend,
            owner,
        )
        return {r["caller"] for r in rows}

    async def queued_count(self, backend: str) -> int:
        count: int = await self.pool.fetchval(
            f"SELECT count(*) FROM batches WHERE backend = $1 AND state = {pb.BATCH_STATE_QUEUED}",
            backend,
        )
        return count

    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        rows = await self.pool.fetch(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE owner = $1 AND "
            f"state = {pb.BATCH_STATE_CANCELLING} ORDER BY create_time, batch_id LIMIT $2",
            owner,
            limit,
        )
        return [_row(r) for r in rows]

    async def purge(self, ended_before: float) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            old = [
                r["batch_id"]
                for r in await conn.fetch(
                    "DELETE FROM batches WHERE end_time IS NOT NULL AND end_time < $1 "
                    "RETURNING batch_id",
                    ended_before,
                )
            ]
            for table in ("outcomes", "chunks", "recipient_pages", "batch_lists"):
                await conn.execute(f"DELETE FROM {table} WHERE batch_id = ANY($1)", old)
        # A list that a stored batch reads stays until that batch is purged.
        old_lists = await self.pool.fetch(
            "SELECT list_id FROM recipient_lists l WHERE create_time < $1 "
            "AND NOT EXISTS (SELECT 1 FROM batch_lists b WHERE b.list_key = l.list_key)",
            ended_before,
        )
        for found in old_lists:
            await self.delete_list(found["list_id"])
        return len(old) + len(old_lists)
