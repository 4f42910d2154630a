"""The SQLite file and its threads: the file locked (flock) and migrated at open; one
writer thread that commits whatever is queued in one transaction (group commit), one
reader thread with its own connection, and a checkpointer that copies the WAL into the
file and keeps the WAL small. SQLiteFile is the SQLite store (store/sqlite.py) without
its operations: they run as functions of a connection, on the writer (`_write`) or the
reader (`_read`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from imgate.clock import SteadyClock
from imgate.store.base import Store
from imgate.store.records import StoreError, StoreStats
from imgate.store.sql.migrate import SQLITE_STEPS, migrate
from imgate.store.sql.schema import SQLITE, Dialect

T = TypeVar("T")
log = logging.getLogger("imgate.store")
_MAX_OPS_PER_COMMIT = 512


class CountingConnection(sqlite3.Connection):
    """A connection that counts the statements it runs (imgate_store_statements_total).

    Counted here, not with set_trace_callback: a trace callback makes sqlite3 expand
    every statement's SQL with its bound values, an outcome page's ~27 KB as a ~53 KB
    hex string, which doubled the writer thread's CPU (bench stage 9).
    """

    statements = 0  # written by the thread that uses the connection only

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.statements += 1
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        self.statements += 1
        return super().executemany(sql, parameters)


def connect(path: Path, busy_ms: int = 5000) -> CountingConnection:
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in the writer).
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, factory=CountingConnection
    )
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new, empty file (the writer's connection, first, under the flock): incremental
        # auto-vacuum, so that purge can give space back (see purge). It must come before
        # anything is written: journal_mode=WAL writes the header, and after that only a
        # VACUUM changes the mode (SQLite's schema step 3 does, once: store/sql/migrate.py).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    # Per connection, applied by the one that resets the WAL (see Checkpointer).
    conn.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
    return conn


# The writer never checkpoints (wal_autocheckpoint=0): a commit that crosses SQLite's
# threshold (1,000 pages) would copy the WAL into the file and fsync it before returning,
# 5-15 ms measured on the way to a batch's first call and its first outcome (issue 15).
# Checkpointer does it instead, PASSIVE (it never waits for, nor blocks, the writer or a
# reader), whenever the WAL has been written since its last look.
#
# Copying is not shrinking. SQLite's rules (wal.c): the WAL file is only reset, written
# again from its start, by a writer that begins a transaction when a checkpoint has copied
# *every* frame and no reader is using the WAL; only then is the file cut down to
# journal_size_limit (a commit after the reset), and only a TRUNCATE checkpoint or the
# last connection's close cuts it to 0. Under continuous writes a PASSIVE checkpoint is
# always a little behind the writer, so there is never a reset and the file grows without
# end (203 MB after 28,000 small requests, 627 MB after a 10,000,000-id list; issue 20),
# and after a burst it stays at its largest until the gateway stops. So the checkpointer
# also runs a TRUNCATE checkpoint (copy everything, wait for readers, reset, cut the file
# to 0) in two cases:
# - the WAL has not been written for _WAL_IDLE_S and is over _WAL_IDLE_TRUNCATE_ABOVE:
#   after a burst the file goes back to 0 (the writer is idle, nobody waits);
# - the WAL is over _WAL_HARD_LIMIT: the bound under continuous load (plus what is written
#   between two looks, _LOOK_EVERY_S, and one transaction: never split). A TRUNCATE
#   checkpoint holds the write lock while it finishes copying and waits for readers, so a
#   commit may wait for it (up to _CHECKPOINTER_BUSY_MS per wait, then it gives up and
#   retries after _FORCED_RETRY_S): a short pause now and then instead of a disk that fills.
# The file is also cut to 0 at a clean close (SQLiteFile._close).
_CHECKPOINT_EVERY_S = 0.25
_LOOK_EVERY_S = 0.05  # a stat() of the WAL file
_JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
_WAL_IDLE_S = 1.0
_WAL_IDLE_TRUNCATE_ABOVE = 1024 * 1024
_WAL_HARD_LIMIT = 32 * 1024 * 1024
# Below the writer's own busy_timeout (5 s): the writer never fails waiting for it.
_CHECKPOINTER_BUSY_MS = 1000
_FORCED_RETRY_S = 2.0


class Checkpointer(threading.Thread):
    """Copies the WAL into the database file in the background, on its own connection,
    and keeps the WAL file small (see above)."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="imgate-sqlite-checkpointer", daemon=True)
        self._conn = connect(path, busy_ms=_CHECKPOINTER_BUSY_MS)
        self._wal = Path(f"{path}-wal")
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join()
        self._conn.close()

    def run(self) -> None:
        seen: tuple[int, int] | None = None  # the WAL's (mtime, size) at the last look
        changed_at = time.monotonic()  # when that last changed
        checkpointed: tuple[int, int] | None = None  # as of the last checkpoint
        forced_after = 0.0  # no TRUNCATE before this (one was kept waiting by a reader)
        passive_after = 0.0  # no PASSIVE before this
        failing = False  # the last checkpoint failed (a full disk): said once
        while not self._stopped.wait(_LOOK_EVERY_S):
            try:
                stat = self._wal.stat()
            except OSError:
                continue  # no WAL yet
            now = time.monotonic()
            look = (stat.st_mtime_ns, stat.st_size)
            if look != seen:
                seen, changed_at = look, now
            idle = now - changed_at >= _WAL_IDLE_S
            if now >= forced_after and (
                stat.st_size > _WAL_HARD_LIMIT or (idle and stat.st_size > _WAL_IDLE_TRUNCATE_ABOVE)
            ):
                mode = "TRUNCATE"
            elif look != checkpointed and now >= passive_after:
                mode = "PASSIVE"
                passive_after = now + _CHECKPOINT_EVERY_S
            else:
                continue
            try:
                busy = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
            except sqlite3.Error as exc:
                if not failing:  # one line per episode: a full disk fails every look
                    log.warning("SQLite checkpoint failed (%s); trying again", exc)
                failing = True
                continue
            if failing:
                log.info("SQLite checkpoints work again")
                failing = False
            checkpointed = look
            if busy and mode == "TRUNCATE":  # a reader or the writer held on: later
                forced_after = now + _FORCED_RETRY_S
                log.debug("SQLite WAL of %d bytes not truncated: busy", stat.st_size)


_Settled = list[tuple["asyncio.Future[Any]", Any, BaseException | None]]


def _settle(settled: _Settled) -> None:
    """On the waiters' event loop: hand each operation's result or error to its waiter
    (one that was cancelled meanwhile is skipped; its operation ran all the same)."""
    for waiter, result, error in settled:
        if waiter.cancelled():
            continue
        if error is None:
            waiter.set_result(result)
        else:
            waiter.set_exception(error)


class Writer(threading.Thread):
    """Runs write operations in order, committing each queue's worth in one transaction.
    The results of one transaction reach each event loop waiting on them in one call
    (call_soon_threadsafe once per commit, not once per operation)."""

    def __init__(self, conn: CountingConnection) -> None:
        super().__init__(name="imgate-sqlite-writer", daemon=True)
        self._conn = conn
        self.commits = 0
        """Transactions committed (written by this thread only)."""
        self._queue: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()

    @property
    def statements(self) -> int:
        return self._conn.statements

    def submit(self, op: Callable[[sqlite3.Connection], T], waiter: asyncio.Future[T]) -> None:
        """Queue `op`; `waiter` (a future of the calling event loop) gets its outcome."""
        self._queue.put((op, waiter))

    def stop(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            while len(items) < _MAX_OPS_PER_COMMIT:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this commit
                    break
                items.append(more)
            self._deliver(self._commit(items))

    def _commit(
        self, items: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]]
    ) -> _Settled:
        conn = self._conn
        results: _Settled = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(items) == 1:  # alone in its transaction: no savepoint needed
                op, waiter = items[0]
                try:
                    results.append((waiter, op(conn), None))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return [(waiter, None, exc)]
            for op, waiter in items if len(items) > 1 else ():
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                except Exception as exc:  # this operation only: roll it back, keep the rest
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((waiter, None, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((waiter, result, None))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = StoreError(f"store: SQLite write failed: {exc}")
            return [(waiter, None, failure) for _, waiter in items]
        return results

    @staticmethod
    def _deliver(settled: _Settled) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, _Settled] = {}
        for entry in settled:
            by_loop.setdefault(entry[0].get_loop(), []).append(entry)
        for loop, entries in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, entries)


class _Schema:
    """The file's schema for the migration runner (store/sql/migrate.py): its version is
    `PRAGMA user_version`; SQL runs on a worker thread, on the writer's connection (its
    thread not yet started)."""

    dialect: Dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection = conn

    async def version(self) -> int:
        return await asyncio.to_thread(self._version)

    def _version(self) -> int:
        found: int = self.connection.execute("PRAGMA user_version").fetchone()[0]
        return found

    async def create(self, version: int, statements: Sequence[str]) -> None:
        await asyncio.to_thread(self._create, version, statements)

    def _create(self, version: int, statements: Sequence[str]) -> None:
        conn = self.connection
        conn.execute("BEGIN IMMEDIATE")
        # One by one, not executescript(): it would commit before the version is set.
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")

    async def set_version(self, version: int) -> None:
        await asyncio.to_thread(self.connection.execute, f"PRAGMA user_version = {version}")


class SQLiteFile(Store):
    """A SQLite store's file and threads (see the module docstring)."""

    durable = True

    def __init__(self, path: Path, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.path = path
        self._clock = clock or SteadyClock()  # times that do not jump with the wall clock
        self._lock_fd: int | None = None
        self._writer: Writer | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._reader: CountingConnection | None = None
        self._read_pool: ThreadPoolExecutor | None = None

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        writer_conn = await asyncio.to_thread(self._lock_and_connect)
        try:
            await migrate(_Schema(writer_conn), SQLITE_STEPS, str(self.path))
            writer_conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            checkpointer = await asyncio.to_thread(Checkpointer, self.path)
        except (sqlite3.Error, StoreError) as exc:
            writer_conn.close()
            self._unlock()  # a newer schema, say: the file is free for the right gateway
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store.url: cannot use {self.path}: {exc}") from None
        await asyncio.to_thread(self._start, writer_conn, checkpointer)

    def _lock_and_connect(self) -> CountingConnection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"store.url: cannot open {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"store.url: {self.path} is in use by another imgate gateway; "
                "give each gateway its own state_dir or store.url"
            ) from None
        self._lock_fd = fd
        try:
            return connect(self.path)
        except sqlite3.Error as exc:
            self._unlock()
            raise StoreError(f"store.url: cannot use {self.path}: {exc}") from None

    def _start(self, writer_conn: CountingConnection, checkpointer: Checkpointer) -> None:
        self._writer_conn = writer_conn
        self._writer = Writer(writer_conn)
        self._writer.start()
        self._checkpointer = checkpointer
        checkpointer.start()
        self._reader = connect(self.path)
        self._read_pool = ThreadPoolExecutor(1, thread_name_prefix="imgate-sqlite-reader")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._read_pool is not None:
            self._read_pool.shutdown()
            self._read_pool = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        writer_conn, self._writer_conn = self._writer_conn, None
        if writer_conn is not None:
            # Last: nobody reads any more, so the WAL is copied and cut to 0 (closing the
            # last connection would also remove it, unless another process still has the
            # file open, a backup tool say: then the WAL would stay at its size).
            try:
                writer_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                log.warning("SQLite checkpoint at close failed", exc_info=True)
            writer_conn.close()
        self._unlock()

    # -- plumbing ---------------------------------------------------------------------

    def stats(self) -> StoreStats:
        writer = self._writer
        if writer is None:
            return StoreStats()
        reader = self._reader.statements if self._reader is not None else 0
        return StoreStats(writer.commits, writer.statements + reader)

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreError("store: not open")
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writer.submit(op, waiter)
        return await waiter

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_pool is None or self._reader is None:
            raise StoreError("store: not open")
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, lambda: op(reader))
