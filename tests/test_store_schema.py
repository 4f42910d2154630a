"""The SQL stores' schema, declared once (store/sql/schema.py) and migrated by one runner
(store/sql/migrate.py): each released step still creates what it created when released,
the tables hold the row types' fields in their order, and a database of any older version
migrates to the schema of a new one, in both dialects. And their queries, by name
(store/sql/queries.sql): every one a store asks for is there, and compiles."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import imgate
from imgate.store.postgres import PostgresStore
from imgate.store.records import BatchRow, ChunkRow, ListRow
from imgate.store.sql import schema
from imgate.store.sql.migrate import POSTGRESQL_STEPS, SQLITE_STEPS
from imgate.store.sql.queries import POSTGRESQL_QUERIES, SQLITE_QUERIES, Queries
from imgate.store.sqlite import SQLiteStore
from tests import _postgres, _schemas


def _normal(sql: str) -> str:
    """SQL with whitespace collapsed; `!=` is `<>` (what SQLite's files say is theirs)."""
    sql = re.sub(r"\s+", " ", sql.replace("!=", "<>"))
    return sql.replace("( ", "(").replace(" )", ")").strip().rstrip(";").strip()


@pytest.mark.parametrize(
    ("dialect", "steps", "released"),
    [
        (schema.SQLITE, SQLITE_STEPS, _schemas.SQLITE_STEPS),
        (schema.POSTGRESQL, POSTGRESQL_STEPS, _schemas.POSTGRESQL_STEPS),
    ],
)
def test_each_step_creates_what_the_released_gateways_created(
    dialect: schema.Dialect, steps: tuple[Any, ...], released: tuple[str | None, ...]
) -> None:
    assert len(steps) == len(released)
    for number, (step, sql) in enumerate(zip(steps, released, strict=True), 1):
        if sql is None:  # a step of the dialect's own (SQLite's VACUUM)
            assert callable(step), number
            continue
        rendered = ";\n".join(schema.ddl(step, dialect))
        assert _normal(rendered) == _normal(sql), (dialect, number)


def test_the_tables_hold_the_rows_fields_in_their_order() -> None:
    batch = [f.name for f in dataclasses.fields(BatchRow)]
    added = [c.name for c in schema.BATCH_COLUMNS_ADDED]  # by later steps, at the end
    assert [*schema.BATCHES.names(schema.SQLITE), *added] == batch
    first = batch[: len(batch) - len(added)]
    assert schema.BATCHES.names(schema.POSTGRESQL) == [*first, "owner"]
    chunk = [f.name for f in dataclasses.fields(ChunkRow)]
    columns = schema.CHUNKS.names(schema.SQLITE)
    assert [c.removesuffix("_pos") for c in columns] == chunk
    lists = [f.name for f in dataclasses.fields(ListRow)]
    added_to_lists = [c.name for c in schema.LIST_COLUMNS_ADDED]
    assert [*schema.RECIPIENT_LISTS.names(schema.SQLITE), *added_to_lists] == [
        "list_key",
        *lists,
    ]


def _sqlite_schema(path: Path) -> dict[str, object]:
    conn = sqlite3.connect(path)
    try:
        found: dict[str, object] = {
            name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("user_version", "auto_vacuum", "journal_mode")
        }
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        for kind, name, sql in rows.fetchall():
            pragma = "table_xinfo" if kind == "table" else "index_xinfo"
            columns = conn.execute(f"PRAGMA {pragma}({name})").fetchall()
            found[f"{kind} {name}"] = (_normal(sql or ""), columns)
        return found
    finally:
        conn.close()


async def test_a_sqlite_file_of_any_version_migrates_to_a_new_files_schema(
    tmp_path: Path,
) -> None:
    schemas = []
    for version in range(len(_schemas.SQLITE_STEPS)):
        path = tmp_path / f"v{version}.db"
        if version:  # as the gateway of that version left it
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            for number, sql in enumerate(_schemas.SQLITE_STEPS[:version], 1):
                if sql is None:
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                    conn.execute("VACUUM")
                else:
                    conn.execute("BEGIN")
                    for statement in filter(str.strip, sql.split(";")):
                        conn.execute(statement)
                    conn.execute("COMMIT")
                conn.execute(f"PRAGMA user_version = {number}")
            conn.close()
        store = SQLiteStore(path)
        await store.open()
        await store.close()
        schemas.append(_sqlite_schema(path))
    assert schemas[0]["user_version"] == len(SQLITE_STEPS)
    for version, found in enumerate(schemas[1:], 1):
        assert found == schemas[0], version


async def _postgresql_schema(conn: asyncpg.Connection, name: str) -> dict[str, object]:
    columns = await conn.fetch(
        "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
        "column_default, is_identity, identity_generation FROM information_schema.columns "
        "WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
        name,
    )
    indexes = await conn.fetch(
        "SELECT indexname, replace(indexdef, $1, '') FROM pg_indexes WHERE schemaname = $2 "
        "ORDER BY indexname",
        name + ".",
        name,
    )
    constraints = await conn.fetch(
        "SELECT conname, contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname = $1 ORDER BY conname",
        name,
    )
    versions = await conn.fetch(f"SELECT version FROM {name}.schema_version ORDER BY version")
    return {
        "columns": [tuple(r) for r in columns],
        "indexes": [tuple(r) for r in indexes],
        "constraints": [tuple(r) for r in constraints],
        "versions": [r[0] for r in versions],
    }


async def test_a_postgresql_schema_of_any_version_migrates_to_a_new_ones() -> None:
    base = await _postgres.reachable_or_skip()
    conn = await asyncpg.connect(base)
    names = [_postgres.new_schema() for _ in _schemas.POSTGRESQL_STEPS]
    try:
        schemas = []
        for version, name in enumerate(names):
            if version:  # as the gateway of that version left it
                await conn.execute(f"CREATE SCHEMA {name}")
                await conn.execute(f"SET search_path = {name}")
                await conn.execute("CREATE TABLE schema_version (version integer)")
                for number, sql in enumerate(_schemas.POSTGRESQL_STEPS[:version], 1):
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_version VALUES ($1)", number)
                await conn.execute("RESET search_path")
            store = PostgresStore(_postgres.with_schema(base, name))
            await store.open()
            await store.close()
            schemas.append(await _postgresql_schema(conn, name))
        assert schemas[0]["versions"] == list(range(1, len(POSTGRESQL_STEPS) + 1))
        for version, found in enumerate(schemas[1:], 1):
            assert found == schemas[0], version
    finally:
        for name in names:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


def _asked(module: str) -> set[str]:
    """The query names a store module asks for (Q["name"], Q.all("name"))."""
    text = (Path(imgate.__file__).parent / "store" / f"{module}.py").read_text()
    return set(re.findall(r'\bQ(?:\[|\.all\()\s*"(\w+)"', text))


@pytest.mark.parametrize(
    ("queries", "modules"),
    [
        (SQLITE_QUERIES, ("sqlite", "sqlite_lists", "sqlite_threads")),
        (POSTGRESQL_QUERIES, ("postgres", "postgres_lists", "postgres_replicas")),
    ],
)
def test_every_query_a_store_asks_for_is_there(queries: Queries, modules: tuple[str, ...]) -> None:
    asked = set().union(*(_asked(m) for m in modules))
    assert asked, modules
    assert asked <= set(queries.names())


async def test_every_sqlite_query_compiles_against_the_schema(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "imgate.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "imgate.db")
    try:
        for name in SQLITE_QUERIES.names():
            for sql in SQLITE_QUERIES.all(name):
                count = max((int(n) for n in re.findall(r"\?(\d+)", sql)), default=0)
                conn.execute(f"EXPLAIN {sql}", [None] * count)  # compiled, not run
    finally:
        conn.close()


async def test_every_postgresql_query_compiles_against_the_schema() -> None:
    base = await _postgres.reachable_or_skip()
    name = _postgres.new_schema()
    store = PostgresStore(_postgres.with_schema(base, name))
    await store.open()
    try:
        async with store.pool.acquire() as conn:
            for query in POSTGRESQL_QUERIES.names():
                for sql in POSTGRESQL_QUERIES.all(query):
                    if not sql.startswith(("SHOW", "CREATE")):
                        await conn.prepare(sql)  # parsed and planned, not run
    finally:
        await store.close()
        await _postgres.drop_schema(base, name)
