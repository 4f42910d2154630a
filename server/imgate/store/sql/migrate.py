"""One migration runner for every SQL store, and each dialect's numbered steps.

Step n takes a schema from version n - 1 to n (version 0: nothing yet). A step is tables
and indexes (schema.py), created in one transaction with its new version, or a dialect's
own function of its connection, run outside a transaction (SQLite's VACUUM cannot run in
one) and then its version recorded. Where the version is kept, and how a transaction is
had, is the dialect's (a `Database`): SQLite's `PRAGMA user_version`, PostgreSQL's
`schema_version` table, all of a migration in one transaction under an advisory lock.
Released steps never change; add new ones at the end of the lists below.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from imgate.store.records import StoreError
from imgate.store.sql.schema import (
    BATCH_TABLES,
    LIFECYCLE_TABLES,
    LIST_LONGEST,
    LIST_TABLES,
    OUTBOX_TABLES,
    QUEUE_TABLES,
    Dialect,
    Element,
    ddl,
)

log = logging.getLogger("imgate.store")

C = TypeVar("C")
C_co = TypeVar("C_co", covariant=True)
Step = tuple[Element, ...] | Callable[[C], Awaitable[None]]


class Database(Protocol[C_co]):
    """A dialect's schema, as the runner sees it."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def connection(self) -> C_co: ...

    async def version(self) -> int:
        """The schema's version (0: a new database)."""
        ...

    async def create(self, version: int, statements: Sequence[str]) -> None:
        """Run `statements` and record `version`, in one transaction."""
        ...

    async def set_version(self, version: int) -> None: ...


async def migrate(db: Database[C], steps: Sequence[Step[C]], where: str) -> None:
    """Bring `db` to the last of `steps` from whatever version it has; refuse a newer one
    (`where` names the database in messages)."""
    version = await db.version()
    if version > len(steps):
        raise StoreError(
            f"store.url: {where} has schema version {version}, newer than this "
            f"gateway's {len(steps)}; upgrade the gateway"
        )
    for number, step in enumerate(steps[version:], version + 1):
        if callable(step):
            await step(db.connection)
            await db.set_version(number)
        else:
            await db.create(number, ddl(step, db.dialect))
        log.info("store %s migrated to schema version %d", where, number)


# -- SQLite ------------------------------------------------------------------------------

_AUTO_VACUUM_INCREMENTAL = 2


async def _incremental_auto_vacuum(conn: sqlite3.Connection) -> None:
    """SQLite's version 3: the file in incremental auto-vacuum mode, so that purge gives
    space back (PRAGMA incremental_vacuum; without it, deleted pages stay in the file for
    ever).

    A new file has it from its creation (sqlite_threads.connect). A file made by an
    earlier gateway gets it here, once, at the upgrade: SQLite changes the mode of a file
    that has tables only by a VACUUM, which rewrites the whole file (it takes about as
    long as copying it, and as much free disk again, through the WAL, cut back to 0 after).
    """
    await asyncio.to_thread(_vacuum_into_incremental, conn)


def _vacuum_into_incremental(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _AUTO_VACUUM_INCREMENTAL:
        return
    name = conn.execute("PRAGMA database_list").fetchone()[2]
    log.info("store: converting %s to incremental auto-vacuum (once)", name)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


SQLITE_STEPS: tuple[Step[sqlite3.Connection], ...] = (
    BATCH_TABLES,
    LIST_TABLES,
    _incremental_auto_vacuum,
    QUEUE_TABLES,
    LIFECYCLE_TABLES,
    OUTBOX_TABLES,
    LIST_LONGEST,
)


# -- PostgreSQL --------------------------------------------------------------------------

POSTGRESQL_STEPS: tuple[Step[object], ...] = (
    BATCH_TABLES,
    LIST_TABLES,
    QUEUE_TABLES,
    LIFECYCLE_TABLES,
    OUTBOX_TABLES,
    LIST_LONGEST,
)
