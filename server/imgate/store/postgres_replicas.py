"""The PostgreSQL store as one of several replicas on one schema: its connections (a
pool, and one that LISTENs), its schema migrated at start-up, heartbeats, and adoption of
the batches of replicas presumed dead (store/postgres.py has the batches,
store/postgres_lists.py the recipient lists, store/sql/queries.sql the SQL).

- The schema is created and migrated by the gateway at start-up, one version at a time
  (`schema_version`), under an advisory lock so replicas starting together do not race.
  The schema is the first of the URL's `search_path` (asyncpg passes unknown URL query
  parameters to the server as settings: `?search_path=imgate` works); it is created
  when missing.
- `adopt` runs under `pg_try_advisory_xact_lock`: one sweeper at a time per schema. An
  adopter locks the batches `FOR UPDATE SKIP LOCKED`, which waits for no writer and is
  never interleaved with one.
- Watchers on every replica are woken by `LISTEN/NOTIFY` (a channel per schema, payload:
  the batch id) on one connection per gateway, reopened by the heartbeat when lost;
  `BatchService.watch` still polls, should a notification be lost.
- Commits are counted (imgate_store_commits_total) as the statements that write on their
  own (autocommitted: `_committed`) and the transactions (`_transaction`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

import asyncpg

from imgate.config.redaction import hide_password, redacted_url
from imgate.store.base import Store
from imgate.store.records import ChunkRow, Recovered, StoreError
from imgate.store.sql.migrate import POSTGRESQL_STEPS, migrate
from imgate.store.sql.queries import POSTGRESQL_QUERIES as Q
from imgate.store.sql.schema import POSTGRESQL, Dialect
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.store")


class _ConnectionLossOnOneLine(logging.Filter):
    """asyncpg's pool logs each failed attempt to reconnect with a traceback, every few
    seconds while the database is away: the operator's trouble, not a bug, so one line
    naming the error (issue 22)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
            record.msg = f"{record.getMessage()}: {str(exc) or type(exc).__name__}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_ConnectionLossOnOneLine())

T = TypeVar("T")
# Store operations are short; a replica rarely has more than its in-flight chunks' writes
# and a few watchers' reads at once. Three replicas stay far below max_connections (100).
_POOL_MIN, _POOL_MAX = 2, 10
_CONNECT_TIMEOUT_S = 10.0

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class _Schema:
    """The schema for the migration runner, inside the migration's transaction."""

    dialect: Dialect = POSTGRESQL

    def __init__(self, conn: Connection) -> None:
        self.connection = conn

    async def version(self) -> int:
        await self.connection.execute(Q["schema_version_table"])
        found: int = await self.connection.fetchval(Q["schema_version"])
        return found

    async def create(self, version: int, statements: Sequence[str]) -> None:
        await self.connection.execute(";\n".join(statements))  # one round trip
        await self.set_version(version)

    async def set_version(self, version: int) -> None:
        await self.connection.execute(Q["set_schema_version"], version)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset (see PostgresReplicas.open)."""


def _chunk(record: asyncpg.Record) -> ChunkRow:
    return ChunkRow(*record.values())


class PostgresReplicas(Store):
    """A PostgreSQL store's connections and its replicas' life (see the module docstring)."""

    durable = True
    shared = True

    def __init__(self, url: str, lease_s: float = 30.0) -> None:
        """`lease_s`: how old a replica's heartbeat is before `recover` takes its batches."""
        super().__init__()
        self.url = url
        self.lease_s = lease_s
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self.schema = ""
        self._channel = ""
        """NOTIFY channel: per schema, so gateways on other schemas of the database are
        not woken (channels are per database)."""

    def is_outage(self, exc: BaseException) -> bool:
        # A connection the server closed or that broke mid-statement: the database's
        # absence (a restart, a network cut), not a bug.
        return super().is_outage(exc) or isinstance(
            exc,
            asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.CannotConnectNowError
            | asyncpg.AdminShutdownError,
        )

    def _error(self, what: str, exc: BaseException) -> StoreError:
        text = hide_password(str(exc) or type(exc).__name__, self.url)
        return StoreError(f"store.url: {what} {redacted_url(self.url)}: {text}")

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=_POOL_MIN,
                max_size=_POOL_MAX,
                timeout=_CONNECT_TIMEOUT_S,
                init=self._init_connection,
                # Not asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET
                # ALL) after every release: pooled connections keep no session state here
                # (transaction-scoped locks only, settings given at connect, LISTEN on a
                # connection of its own), and the reset was a quarter of the statements
                # of a small send (issue 20).
                reset=_keep_session,
                server_settings={
                    "application_name": "imgate",
                    # A replica frozen inside a transaction (SIGSTOP, a VM pause) would
                    # hold its batch rows locked, and the sweepers' SKIP LOCKED would pass
                    # them by for as long as it sleeps: after a lease without a word from
                    # it (at least a second), the server ends its session; its writes
                    # would be fenced off anyway.
                    "idle_in_transaction_session_timeout": str(
                        round(max(1.0, self.lease_s) * 1000)
                    ),
                },
            )
        except Exception as exc:  # whatever it is, its message is shown without the password
            raise self._error("cannot connect to", exc) from None
        try:
            async with self._pool.acquire() as conn:
                await self._migrate(conn)
            await self._listen()
        except StoreError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise self._error("cannot use", exc) from None

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(self._count_statement)

    def _count_statement(self, _query: object) -> None:
        self._stats.statements += 1

    async def _listen(self) -> None:
        """(Re)open the connection that LISTENs for other replicas' changes."""
        listener = await asyncpg.connect(
            self.url,
            timeout=_CONNECT_TIMEOUT_S,
            server_settings={"application_name": "imgate listen"},
        )
        await listener.add_listener(self._channel, self._notified)
        self._listener = listener

    async def _migrate(self, conn: Connection) -> None:
        path = await conn.fetchval(Q["search_path"])
        async with conn.transaction():
            # Per schema: replicas of one gateway wait for each other, other schemas don't.
            await conn.execute(Q["advisory_lock"], f"migrate {path}")
            schema = await conn.fetchval(Q["current_schema"])
            if schema is None:
                first = next(
                    (p.strip() for p in path.split(",") if p.strip() not in ("", '"$user"')),
                    None,
                )
                if first is None:
                    raise StoreError(f"store.url: {redacted_url(self.url)}: no schema to use")
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {first}")
                schema = await conn.fetchval(Q["current_schema"])
            self.schema = schema
            self._channel = f"imgate {schema}"
            await migrate(_Schema(conn), POSTGRESQL_STEPS, redacted_url(self.url))
        self._stats.commits += 1

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # "BATCH_ID" (outcomes recorded) or "BATCH_ID STATE" (set_state).
        batch_id, _, state = str(payload).partition(" ")
        self.notifier.notify(batch_id)
        if state == str(pb.BATCH_STATE_CANCELLING) and self.cancelled_elsewhere is not None:
            self.cancelled_elsewhere(batch_id)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=5)
            self._listener = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except Exception:
                self._pool.terminate()  # a connection still busy, or the server gone
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store: not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection in a transaction: one commit when the block ends normally."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn
        self._stats.commits += 1

    def _committed(self, result: T) -> T:
        """`result` of a statement that wrote on its own, autocommitted: one commit."""
        self._stats.commits += 1
        return result

    # -- replicas ---------------------------------------------------------------------

    async def now(self) -> float | None:
        # The database's clock: the one all replicas share, which no replica's jump moves.
        now: float = await self.pool.fetchval("SELECT extract(epoch FROM now())::float8")
        return now

    async def heartbeat(self, owner: str) -> None:
        self._committed(await self.pool.execute(Q["heartbeat"], owner))
        if self._listener is None or self._listener.is_closed():
            # Lost with a database restart or a network cut: listen again, and wake every
            # watcher, since what was notified meanwhile is lost.
            await self._listen()
            log.info("listening for other replicas' changes again")
            self.notifier.notify_all()

    async def retire(self, owner: str) -> None:
        self._committed(await self.pool.execute(Q["retire"], owner))

    async def release(self, batch_id: str, owner: str) -> None:
        self._committed(await self.pool.execute(Q["release"], batch_id, owner))

    async def recover(self, owner: str) -> Recovered:
        # A restart is an adoption: the batches of replicas whose lease ran out (the
        # previous process of this gateway among them), never those of a live replica.
        _, recovered = await self._adopt(owner, self.lease_s, wait=True)
        return recovered

    async def adopt(self, owner: str, lease_s: float) -> tuple[int, Recovered]:
        return await self._adopt(owner, lease_s, wait=False)

    async def _adopt(self, owner: str, lease_s: float, wait: bool) -> tuple[int, Recovered]:
        async with self._transaction() as conn:
            # One sweeper at a time (per schema); the others find the lock taken and skip.
            if await conn.fetchval(Q["sweep_lock" if wait else "try_sweep_lock"]) is False:
                return 0, Recovered()
            taken = await conn.fetch(Q["adoptable_batches"], owner, lease_s)
            batch_ids = [r["batch_id"] for r in taken]
            if not batch_ids:
                return 0, Recovered()
            await conn.execute(Q["adopt_batches"], owner, batch_ids)
            reclaimed = await conn.execute(Q["reclaim_chunks"], batch_ids)
            sending = await conn.fetch(Q["hand_over_sending"], owner, batch_ids)
            await conn.execute(Q["requeue_running"], batch_ids)
            to_close = await conn.fetch(Q["batches_to_close"], batch_ids)
            await conn.execute(Q["forget_dead_replicas"], lease_s, owner)
        chunks = sorted((_chunk(r) for r in sending), key=lambda c: (c.batch_id, c.number))
        closing = [r["batch_id"] for r in to_close]
        return len(batch_ids), Recovered(chunks, int(reclaimed.split()[-1]), closing)
