"""The tables of both SQL stores, declared once; each dialect's DDL is rendered from here.

A column has a kind, and each kind a type per dialect (SQLite keeps booleans as integers,
its own row numbers as INTEGER PRIMARY KEY; PostgreSQL numbers rows by identity). What a
dialect has of its own is marked: PostgreSQL's batches have an owner (the replica that
sends them) and a `replicas` table of heartbeats, so some of its indexes lead with the
owner; SQLite clusters tables WITHOUT ROWID on their primary keys.

Each declaration is what a numbered migration step (migrate.py) creates, and a released
step must create tomorrow what it created when it was released: a later change to a
table is a new step, never an edit here (tests/test_store_schema.py holds each step's DDL
to the SQL the released gateways ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["sqlite", "postgresql"]
SQLITE: Dialect = "sqlite"
POSTGRESQL: Dialect = "postgresql"

_TYPES: dict[str, dict[Dialect, str]] = {
    "text": {SQLITE: "TEXT", POSTGRESQL: "text"},
    "bytes": {SQLITE: "BLOB", POSTGRESQL: "bytea"},
    "int": {SQLITE: "INTEGER", POSTGRESQL: "integer"},
    "bool": {SQLITE: "INTEGER", POSTGRESQL: "boolean"},
    "float": {SQLITE: "REAL", POSTGRESQL: "double precision"},
    # A row number: SQLite's rowid (INTEGER PRIMARY KEY), PostgreSQL's bigint identity.
    "key": {SQLITE: "INTEGER", POSTGRESQL: "bigint"},
    "time": {POSTGRESQL: "timestamptz"},
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str
    null: bool = False
    default: str = ""
    primary: bool = False
    unique: bool = False
    numbered: bool = False
    """The database numbers the rows (a "key" that is the primary key)."""
    only: Dialect | None = None

    def ddl(self, dialect: Dialect) -> str:
        parts = [self.name, _TYPES[self.kind][dialect]]
        if self.numbered and dialect == POSTGRESQL:
            parts.append("GENERATED ALWAYS AS IDENTITY")
        if self.primary:
            parts.append("PRIMARY KEY")
        elif not self.null:
            parts.append("NOT NULL")
        if self.unique:
            parts.append("UNIQUE")
        if self.default:
            parts.append(f"DEFAULT {self.default}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    without_rowid: bool = False
    """SQLite: the rows are stored in their primary key's order, with no rowid."""
    only: Dialect | None = None

    def names(self, dialect: Dialect) -> list[str]:
        return [c.name for c in self.columns if c.only in (None, dialect)]

    def ddl(self, dialect: Dialect) -> str:
        lines = [c.ddl(dialect) for c in self.columns if c.only in (None, dialect)]
        if self.primary_key:
            lines.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        rowid = " WITHOUT ROWID" if self.without_rowid and dialect == SQLITE else ""
        return f"CREATE TABLE {self.name} (\n    " + ",\n    ".join(lines) + f"\n){rowid}"


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    table: str
    columns: tuple[str, ...]
    where: str = ""
    unique: bool = False
    postgresql_columns: tuple[str, ...] = ()
    """PostgreSQL's columns where they differ (its batches have an owner)."""

    def ddl(self, dialect: Dialect) -> str:
        columns = (dialect == POSTGRESQL and self.postgresql_columns) or self.columns
        unique = "UNIQUE " if self.unique else ""
        where = f" WHERE {self.where}" if self.where else ""
        return f"CREATE {unique}INDEX {self.name} ON {self.table} ({', '.join(columns)}){where}"


@dataclass(frozen=True, slots=True)
class AddColumn:
    """A column added to an existing table by a later step (at the table's end)."""

    table: str
    column: Column

    def ddl(self, dialect: Dialect) -> str:
        return f"ALTER TABLE {self.table} ADD COLUMN {self.column.ddl(dialect)}"


@dataclass(frozen=True, slots=True)
class DropIndex:
    """An index a later step replaces."""

    name: str

    def ddl(self, dialect: Dialect) -> str:
        return f"DROP INDEX {self.name}"


Element = Table | Index | AddColumn | DropIndex
"""What a migration step is made of."""


def ddl(step: Sequence[Element], dialect: Dialect) -> list[str]:
    """The statements that create `step`'s tables and indexes in `dialect`."""
    return [
        thing.ddl(dialect)
        for thing in step
        if not isinstance(thing, Table) or thing.only in (None, dialect)
    ]


# -- version 1: batches, their recipients, chunks and outcomes ---------------------------

# BatchRow's fields, in its order (the stores read rows into it by position).
BATCHES = Table(
    "batches",
    (
        Column("batch_id", "text", primary=True),
        Column("caller", "text"),
        Column("request_id", "text"),
        Column("fingerprint", "bytes"),
        Column("backend", "text"),
        Column("spec", "bytes"),
        Column("bound", "bool"),
        Column("total", "int"),
        Column("duplicates_removed", "int"),
        Column("create_time", "float"),
        Column("send_before", "float", null=True),
        Column("state", "int"),
        Column("accepted", "int", default="0"),
        Column("failed", "int", default="0"),
        Column("uncertain", "int", default="0"),
        Column("vendor_calls", "int", default="0"),
        Column("update_time", "float"),
        Column("end_time", "float", null=True),
        Column("planned_to", "int", default="0"),
        Column("chunk_count", "int", default="0"),
        Column("next_seq", "int", default="1"),
        Column("owner", "text", default="''", only=POSTGRESQL),
    ),
)
BATCHES_BY_REQUEST = Index(
    "batches_by_request", "batches", ("caller", "request_id"), "request_id <> ''", unique=True
)
BATCHES_BY_CALLER = Index("batches_by_caller", "batches", ("caller", "create_time", "batch_id"))
# Unfinished: QUEUED, RUNNING, CANCELLING (as numbered when version 1 was released).
BATCHES_UNFINISHED = Index(
    "batches_unfinished", "batches", ("state",), "state IN (1, 2, 4)", postgresql_columns=("owner",)
)
BATCHES_ENDED = Index("batches_ended", "batches", ("end_time",), "end_time IS NOT NULL")
RECIPIENT_PAGES = Table(
    "recipient_pages",
    (
        Column("batch_id", "text"),
        Column("page", "int"),
        Column("ids", "text"),
        Column("indexes", "text"),
    ),
    ("batch_id", "page"),
    without_rowid=True,
)
# ChunkRow's fields, in its order, under the chunk table's names.
CHUNKS = Table(
    "chunks",
    (
        Column("batch_id", "text"),
        Column("number", "int"),
        Column("start_pos", "int"),
        Column("end_pos", "int"),
        Column("state", "text"),
        Column("attempts", "int"),
        Column("owner", "text"),
    ),
    ("batch_id", "number"),
    without_rowid=True,
)
CHUNKS_IN_FLIGHT = Index(
    "chunks_in_flight",
    "chunks",
    ("state",),
    "state IN ('claimed', 'sending')",
    postgresql_columns=("batch_id",),
)
OUTCOMES = Table(
    "outcomes",
    (
        Column("batch_id", "text"),
        Column("seq", "int"),
        Column("data", "bytes"),
        Column("count", "int"),
    ),
    ("batch_id", "seq"),
    without_rowid=True,
)
REPLICAS = Table(
    "replicas",
    (
        Column("owner", "text", primary=True),
        Column("started", "time", default="now()"),
        Column("heartbeat", "time"),
    ),
    only=POSTGRESQL,
)
BATCH_TABLES: tuple[Element, ...] = (
    BATCHES,
    BATCHES_BY_REQUEST,
    BATCHES_BY_CALLER,
    BATCHES_UNFINISHED,
    BATCHES_ENDED,
    RECIPIENT_PAGES,
    CHUNKS,
    CHUNKS_IN_FLIGHT,
    OUTCOMES,
    REPLICAS,
)

# -- version 2: recipient lists ----------------------------------------------------------
# `list_members` is the unique index that drops duplicates while a list is uploaded
# (emptied when it is finished); `list_pages` holds the unique ids in the layout of
# `recipient_pages`; a batch made from a list reads its pages through `batch_lists` (no
# copy: a batch of millions is created in one small transaction).

# ListRow's fields, in its order, after the list's own number.
RECIPIENT_LISTS = Table(
    "recipient_lists",
    (
        Column("list_key", "key", primary=True, numbered=True),
        Column("list_id", "text", unique=True),
        Column("caller", "text"),
        Column("create_time", "float"),
        Column("request_id", "text"),
        Column("fingerprint", "bytes"),
        Column("count", "int"),
        Column("received", "int"),
        Column("widest_id", "text"),
        Column("widest_index", "int"),
        Column("ready_time", "float", null=True),
    ),
)
LIST_TABLES: tuple[Element, ...] = (
    RECIPIENT_LISTS,
    Index(
        "recipient_lists_by_request",
        "recipient_lists",
        ("caller", "request_id"),
        "request_id <> ''",
        unique=True,
    ),
    Index("recipient_lists_by_age", "recipient_lists", ("create_time",)),
    Table(
        "list_members",
        (Column("list_key", "key"), Column("recipient_id", "text")),
        ("list_key", "recipient_id"),
        without_rowid=True,
    ),
    Table(
        "list_pages",
        (
            Column("list_key", "key"),
            Column("page", "int"),
            Column("ids", "text"),
            Column("indexes", "text"),
        ),
        ("list_key", "page"),
        without_rowid=True,
    ),
    Table(
        "batch_lists",
        (Column("batch_id", "text", primary=True), Column("list_key", "key")),
        without_rowid=True,
    ),
    Index("batch_lists_by_list", "batch_lists", ("list_key",)),
)

# -- the queue (SQLite's version 4, PostgreSQL's 3) --------------------------------------
# Batches wait QUEUED in the store, not in memory; the scheduler takes each caller's
# oldest one (on PostgreSQL, of the batches its replica owns).
QUEUE_TABLES: tuple[Element, ...] = (
    Index(
        "batches_queued",
        "batches",
        ("backend", "caller", "create_time", "batch_id"),
        "state = 1",
        postgresql_columns=("backend", "owner", "caller", "create_time", "batch_id"),
    ),
)

# -- a batch's life after submit (SQLite's version 5, PostgreSQL's 4) --------------------
# Scheduled sends: `send_after`, and SCHEDULED (6) counted among the unfinished states
# (an adopter takes a dead replica's scheduled batches too); the scheduler asks for the
# earliest one. Recall: a recall batch names its original (`recall_of`), the original its
# recall (`recalled_by`); a recall batch's recipients are pages as any batch's, and what
# the vendor's recall API needs of each (message id, time) is in `recall_keys`, page by
# page alongside them.
BATCH_COLUMNS_ADDED: tuple[Column, ...] = (
    Column("send_after", "float", null=True),
    Column("recall_of", "text", default="''"),
    Column("recalled_by", "text", default="''"),
)
"""The batches table's columns after version 1's (BatchRow's last fields, in order)."""
LIFECYCLE_TABLES: tuple[Element, ...] = (
    *(AddColumn("batches", column) for column in BATCH_COLUMNS_ADDED),
    DropIndex("batches_unfinished"),
    Index(
        "batches_unfinished",
        "batches",
        ("state",),
        "state IN (1, 2, 4, 6)",
        postgresql_columns=("owner",),
    ),
    Index(
        "batches_scheduled",
        "batches",
        ("send_after",),
        "state = 6",
        postgresql_columns=("owner", "send_after"),
    ),
    Table(
        "recall_keys",
        (Column("batch_id", "text"), Column("page", "int"), Column("keys", "text")),
        ("batch_id", "page"),
        without_rowid=True,
    ),
)

# -- the webhook outbox (SQLite's version 6, PostgreSQL's 5) -----------------------------
# One row per event and endpoint, written in the transaction that ends the batch; the
# delivery loop claims due rows of an endpoint (next_attempt is also the lease of a claimed
# one), deletes a row once delivered or given up, and purge deletes what is left of
# batches it purges (create_time is the batch's end_time).
WEBHOOK_EVENTS = Table(
    "webhook_events",
    (
        Column("event_id", "text"),
        Column("url", "text"),
        Column("type", "text"),
        Column("batch_id", "text"),
        Column("create_time", "float"),
        Column("next_attempt", "float"),
        Column("attempts", "int", default="0"),
        Column("body", "bytes", null=True),
    ),
    ("event_id", "url"),
)
LIST_COLUMNS_ADDED: tuple[Column, ...] = (
    # A list's longest id in each unit (issue 21: a vendor with looser ids, RongCloud).
    Column("longest", "text", default="''"),
)
"""ListRow's fields after RECIPIENT_LISTS', added by later steps, in order."""
LIST_LONGEST: tuple[Element, ...] = tuple(
    AddColumn("recipient_lists", column) for column in LIST_COLUMNS_ADDED
)
OUTBOX_TABLES: tuple[Element, ...] = (
    WEBHOOK_EVENTS,
    Index("webhook_events_due", "webhook_events", ("url", "next_attempt")),
)
