"""The SQLite store: the embedded default, one file, stdlib `sqlite3`.

WAL with `synchronous=FULL`: a commit is on disk when it returns, so a chunk marked
SENDING stays marked through kill -9 or power loss. All SQL runs off the event loop: one
writer thread that commits whatever is queued in one transaction (group commit: many
chunks' marks cost one fsync; each operation in its own savepoint so one failure costs
only its caller), and one reader thread with its own connection (WAL readers never wait
for the writer). A second gateway on the same file is refused: the file is locked with
flock for as long as the process lives, and a dead process's lock goes with it.

Disk use stays bounded: a background thread checkpoints the WAL and truncates it when the
writer is idle or the WAL passes a hard bound (sqlite_threads.Checkpointer), and purge
gives the space of what it deleted back to the file system (incremental auto-vacuum,
_vacuum).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
    Recovered,
)
from imgate.store.pages import decode_recipients, encode_recipients
from imgate.store.sql.migrate import SQLITE_STEPS
from imgate.store.sqlite_lists import SQLiteLists
from imgate.v1 import gateway_pb2 as pb

T = TypeVar("T")

SCHEMA_VERSION = len(SQLITE_STEPS)
# Purge frees pages of the file this many (4 KiB each) per writer transaction: ~15 ms.
_VACUUM_PAGES = 2048
log = logging.getLogger("imgate.store")

# The batches table has BatchRow's fields as columns, in its order: one owner for both.
_BATCH_COLUMNS = ", ".join(f.name for f in dataclasses.fields(BatchRow))


def _row(values: Sequence[Any]) -> BatchRow:
    row = BatchRow(*values)
    row.bound = bool(row.bound)  # SQLite keeps booleans as integers
    return row


class SQLiteStore(SQLiteLists):
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

        def insert_pages(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO recipient_pages (batch_id, page, ids, indexes) VALUES (?,?,?,?)",
                pages,
            )

        return await self._write(
            lambda conn: self._create(conn, row, insert_pages, first_chunk, owner)
        )

    async def create_batch_from_list(
        self,
        row: BatchRow,
        list_id: str,
        owner: str = "",  # one process: its own
    ) -> tuple[BatchRow, bool]:
        def copy_pages(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT list_key FROM recipient_lists WHERE list_id = ? AND ready_time IS NOT NULL",
                (list_id,),
            ).fetchone()
            if found is None:
                raise LookupError(f"no recipient list {list_id!r}")
            conn.execute("INSERT INTO batch_lists VALUES (?, ?)", (row.batch_id, found[0]))

        return await self._write(lambda conn: self._create(conn, row, copy_pages))

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
            found = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = ? AND request_id = ?",
                (row.caller, row.request_id),
            ).fetchone()
            if found is not None:
                return _row(found), False
        planned_to, chunk_count = (0, 0) if first_chunk is None else (first_chunk.end, 1)
        stored = conn.execute(
            f"INSERT INTO batches ({_BATCH_COLUMNS}) VALUES "
            f"(?,?,?,?,?,?,?,?,?,?,?,?,0,0,0,0,?,NULL,?,?,1) RETURNING {_BATCH_COLUMNS}",
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
                row.create_time,
                planned_to,
                chunk_count,
            ),
        ).fetchone()
        insert_recipients(conn)
        if first_chunk is not None:
            first_chunk.state = SENDING
            conn.execute(
                "INSERT INTO chunks VALUES (?,?,?,?,?,?,?)",
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

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        def op(conn: sqlite3.Connection) -> BatchRow | None:
            found = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            return None if found is None else _row(found)

        return await self._read(op)

    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            if before is None:
                rows = conn.execute(
                    f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = ? "
                    "ORDER BY create_time DESC, batch_id DESC LIMIT ?",
                    (caller, limit),
                )
            else:
                rows = conn.execute(
                    f"SELECT {_BATCH_COLUMNS} FROM batches WHERE caller = ? "
                    "AND (create_time, batch_id) < (?, ?) "
                    "ORDER BY create_time DESC, batch_id DESC LIMIT ?",
                    (caller, before[0], before[1], limit),
                )
            return [_row(r) for r in rows]

        return await self._read(op)

    async def unfinished_batches(self) -> list[BatchRow]:
        states = ",".join(str(s) for s in sorted(UNFINISHED_STATES))

        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            rows = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE state IN ({states}) "
                "ORDER BY create_time, batch_id"
            )
            return [_row(r) for r in rows]

        return await self._read(op)

    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        first, last = start // RECIPIENT_PAGE, (end - 1) // RECIPIENT_PAGE

        def op(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
            # A batch has its own pages, or (made from a list) the list's: one of the two.
            return conn.execute(
                "SELECT page, ids, indexes FROM recipient_pages "
                "WHERE batch_id = ?1 AND page BETWEEN ?2 AND ?3 "
                "UNION ALL SELECT page, ids, indexes FROM list_pages WHERE list_key = "
                "(SELECT list_key FROM batch_lists WHERE batch_id = ?1) "
                "AND page BETWEEN ?2 AND ?3 ORDER BY page",
                (batch_id, first, last),
            ).fetchall()

        ids: list[str] = []
        indexes: list[int] = []
        for page, page_ids, page_indexes in await self._read(op):
            decoded_ids, decoded_indexes = decode_recipients(
                page_ids, page_indexes, page * RECIPIENT_PAGE
            )
            ids.extend(decoded_ids)
            indexes.extend(decoded_indexes)
        offset = start - first * RECIPIENT_PAGE
        return ids[offset : offset + end - start], indexes[offset : offset + end - start]

    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        def op(conn: sqlite3.Connection) -> list[ChunkRow]:
            rows = conn.execute(
                "SELECT number, start_pos, end_pos, state, attempts, owner FROM chunks "
                "WHERE batch_id = ? ORDER BY number",
                (batch_id,),
            )
            return [ChunkRow(batch_id, *r) for r in rows]

        return await self._read(op)

    @staticmethod
    def _advance(conn: sqlite3.Connection, chunk: ChunkRow) -> bool:
        """Count `chunk` as the batch's next one if it follows the planned ones."""
        return (
            conn.execute(
                "UPDATE batches SET chunk_count = chunk_count + 1, planned_to = ? "
                "WHERE batch_id = ? AND chunk_count = ? AND planned_to = ?",
                (chunk.end, chunk.batch_id, chunk.number, chunk.start),
            ).rowcount
            == 1
        )

    @staticmethod
    def _fence(conn: sqlite3.Connection, chunk: ChunkRow, owner: str) -> None:
        """Raise Fenced: the chunk is missing out of order, final, or another's."""
        found = conn.execute(
            "SELECT state, owner FROM chunks WHERE batch_id = ? AND number = ?",
            (chunk.batch_id, chunk.number),
        ).fetchone()
        if found is None:
            raise Fenced(f"chunk {chunk.number} does not follow the planned ones")
        raise Fenced(f"chunk {chunk.number} is {found[0]} by {found[1] or 'nobody'}")

    # The usual path costs one statement per row touched: an UPDATE whose WHERE is the
    # fence (owner, state), falling back to the reads that explain a refusal.
    _CLAIMABLE = (
        "WHERE batch_id = ? AND number = ? AND "
        f"(state IN ('{PLANNED}', '{CLAIMED}') OR (state = '{SENDING}' AND owner = ?))"
    )

    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        row = (chunk.batch_id, chunk.number, chunk.start, chunk.end, SENDING, chunk.attempts, owner)

        def op(conn: sqlite3.Connection) -> None:
            updated = conn.execute(
                f"UPDATE chunks SET state = ?, owner = ?, attempts = ? {self._CLAIMABLE}",
                (SENDING, owner, chunk.attempts, chunk.batch_id, chunk.number, owner),
            ).rowcount
            if updated:
                return
            if not self._advance(conn, chunk):
                self._fence(conn, chunk, owner)
            conn.execute("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)", row)

        await self._write(op)

    async def record(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> int:
        seq, _ = await self._write(self._record_op(chunk, final_state, page, counts, owner))
        self._recorded(chunk, seq, page)
        return seq

    async def record_last(
        self, chunk: ChunkRow, final_state: str, page: bytes, counts: Counts, owner: str
    ) -> tuple[int, BatchRow]:
        seq, ended = await self._write(
            self._record_op(chunk, final_state, page, counts, owner, ends=True)
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
    ) -> Callable[[sqlite3.Connection], tuple[int, BatchRow | None]]:
        """The write of `record` (and with `ends`, of the batch's end: record_last)."""
        now = self._clock()
        values = (chunk.batch_id, chunk.number, chunk.start, chunk.end)
        counted: tuple[float, ...] = (
            counts.accepted,
            counts.failed,
            counts.uncertain,
            counts.vendor_calls,
            now,
        )
        if ends:
            counted += (now,)  # end_time
            # DONE, or CANCELLED if a cancel came while the last chunk was in flight.
            update = (
                "UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + ?, "
                "failed = failed + ?, uncertain = uncertain + ?, "
                "vendor_calls = vendor_calls + ?, update_time = ?, end_time = ?, "
                f"state = CASE state WHEN {pb.BATCH_STATE_CANCELLING} "
                f"THEN {pb.BATCH_STATE_CANCELLED} ELSE {pb.BATCH_STATE_DONE} END "
                f"WHERE batch_id = ? RETURNING next_seq - 1, {_BATCH_COLUMNS}"
            )
        else:
            update = (
                "UPDATE batches SET next_seq = next_seq + 1, accepted = accepted + ?, "
                "failed = failed + ?, uncertain = uncertain + ?, "
                "vendor_calls = vendor_calls + ?, update_time = ? "
                "WHERE batch_id = ? RETURNING next_seq - 1"
            )

        def op(conn: sqlite3.Connection) -> tuple[int, BatchRow | None]:
            updated = conn.execute(
                f"UPDATE chunks SET state = ?, owner = ?, attempts = ? {self._CLAIMABLE}",
                (final_state, owner, chunk.attempts, chunk.batch_id, chunk.number, owner),
            ).rowcount
            if not updated:
                if not self._advance(conn, chunk):
                    self._fence(conn, chunk, owner)
                conn.execute(
                    "INSERT INTO chunks VALUES (?,?,?,?,?,?,?)",
                    (*values, final_state, chunk.attempts, owner),
                )
            found = conn.execute(update, (*counted, chunk.batch_id)).fetchone()
            seq: int = found[0]
            conn.execute(
                "INSERT INTO outcomes (batch_id, seq, data, count) VALUES (?,?,?,?)",
                (chunk.batch_id, seq, page, chunk.end - chunk.start),
            )
            return seq, _row(found[1:]) if ends else None

        return op

    async def set_state(self, batch_id: str, state: int) -> BatchRow | None:
        now = self._clock()
        ended = ",".join(str(s) for s in sorted(ENDED_STATES))

        def op(conn: sqlite3.Connection) -> BatchRow | None:
            keep_cancelling = (
                f" AND state != {pb.BATCH_STATE_CANCELLING}"
                if state == pb.BATCH_STATE_RUNNING
                else ""
            )
            end_time = now if state in ENDED_STATES else None
            conn.execute(
                "UPDATE batches SET state = ?, update_time = ?, end_time = ? "
                f"WHERE batch_id = ? AND state NOT IN ({ended}){keep_cancelling}",
                (state, now, end_time, batch_id),
            )
            found = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            return None if found is None else _row(found)

        row = await self._write(op)
        if row is not None and row.ended:
            self.tails.drop(batch_id)  # watchers of an ended batch read the file
        self.notifier.notify(batch_id)
        return row

    async def recover(self, owner: str) -> Recovered:
        states = ",".join(str(s) for s in sorted(UNFINISHED_STATES))

        def op(conn: sqlite3.Connection) -> Recovered:
            unfinished = f"batch_id IN (SELECT batch_id FROM batches WHERE state IN ({states}))"
            reclaimed = conn.execute(
                f"UPDATE chunks SET state = ? WHERE state = ? AND {unfinished}",
                (PLANNED, CLAIMED),
            ).rowcount
            sending = conn.execute(
                f"UPDATE chunks SET owner = ? WHERE state = ? AND {unfinished} "
                "RETURNING batch_id, number, start_pos, end_pos, state, attempts, owner",
                (owner, SENDING),
            ).fetchall()
            # Whatever was running waits in the queue again, in its place (create_time).
            conn.execute(
                "UPDATE batches SET state = ? WHERE state = ? AND NOT bound",
                (pb.BATCH_STATE_QUEUED, pb.BATCH_STATE_RUNNING),
            )
            to_close = conn.execute(
                f"SELECT batch_id FROM batches WHERE state IN ({states}) "
                f"AND (bound OR state = {pb.BATCH_STATE_CANCELLING}) ORDER BY create_time",
            ).fetchall()
            return Recovered([ChunkRow(*r) for r in sending], reclaimed, [r[0] for r in to_close])

        return await self._write(op)

    async def _read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int
    ) -> list[OutcomePage]:
        def op(conn: sqlite3.Connection) -> list[OutcomePage]:
            rows = conn.execute(
                "SELECT seq, data, count FROM outcomes WHERE batch_id = ? AND seq > ? ORDER BY seq",
                (batch_id, after_seq),
            )
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

    async def claim_next(self, backend: str, caller: str, owner: str) -> BatchRow | None:
        def op(conn: sqlite3.Connection) -> BatchRow | None:
            found = conn.execute(
                f"UPDATE batches SET state = {pb.BATCH_STATE_RUNNING}, update_time = ? "
                "WHERE batch_id = (SELECT batch_id FROM batches WHERE backend = ? AND "
                f"caller = ? AND state = {pb.BATCH_STATE_QUEUED} "
                "ORDER BY create_time, batch_id LIMIT 1) "
                f"RETURNING {_BATCH_COLUMNS}",
                (self._clock(), backend, caller),
            ).fetchone()
            return None if found is None else _row(found)

        return await self._write(op)

    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        def op(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "SELECT DISTINCT caller FROM batches WHERE backend = ? "
                f"AND state = {pb.BATCH_STATE_QUEUED}",
                (backend,),
            )
            return {r[0] for r in rows}

        return await self._read(op)

    async def queued_count(self, backend: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found: int = conn.execute(
                "SELECT count(*) FROM batches WHERE backend = ? "
                f"AND state = {pb.BATCH_STATE_QUEUED}",
                (backend,),
            ).fetchone()[0]
            return found

        return await self._read(op)

    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        def op(conn: sqlite3.Connection) -> list[BatchRow]:
            rows = conn.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE "
                f"state = {pb.BATCH_STATE_CANCELLING} ORDER BY create_time, batch_id LIMIT ?",
                (limit,),
            )
            return [_row(r) for r in rows]

        return await self._read(op)

    async def purge(self, ended_before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT batch_id FROM batches WHERE end_time IS NOT NULL AND end_time < ?",
                    (ended_before,),
                )
            ]
            for table in ("outcomes", "chunks", "recipient_pages", "batch_lists", "batches"):
                conn.executemany(f"DELETE FROM {table} WHERE batch_id = ?", [(b,) for b in old])
            return len(old)

        purged = await self._write(op)
        old_lists = await self._read(
            lambda conn: [
                r[0]
                for r in conn.execute(
                    # A list that a stored batch reads stays until that batch is purged.
                    "SELECT list_id FROM recipient_lists WHERE create_time < ? AND list_key "
                    "NOT IN (SELECT list_key FROM batch_lists)",
                    (ended_before,),
                )
            ]
        )
        for list_id in old_lists:
            await self.delete_list(list_id)
        if purged or old_lists:
            await self._vacuum()
        return purged + len(old_lists)

    async def _vacuum(self) -> None:
        """Give the pages that deletes freed back to the file system (the file is in
        incremental auto-vacuum mode: _incremental_auto_vacuum). Freed pages are otherwise
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
