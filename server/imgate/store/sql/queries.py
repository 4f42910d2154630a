"""The SQL of both stores, read by name from queries.sql (its head says how it is written).

    SQLITE_QUERIES["batch"]              the statement, SQLite's placeholders (?1, ?2, ...)
    POSTGRESQL_QUERIES["record"]         PostgreSQL's own form of `record`
    SQLITE_QUERIES.all("delete_batch")   an entry of several statements, in order

A name the dialect has no query for raises KeyError, as does `[name]` of an entry of
several statements. tests/test_store_schema.py compiles every query of both dialects
against the schema, and finds every name the stores ask for.
"""

from __future__ import annotations

import dataclasses
import re
from importlib import resources

from imgate.store.records import ENDED_STATES, UNFINISHED_STATES, BatchRow, ListRow
from imgate.store.sql.schema import CHUNKS, POSTGRESQL, SQLITE, Dialect
from imgate.v1 import gateway_pb2 as pb

# What {braces} in queries.sql stand for.
_WORDS: dict[str, object] = {
    "batch_columns": ", ".join(f.name for f in dataclasses.fields(BatchRow)),
    "list_columns": ", ".join(f.name for f in dataclasses.fields(ListRow)),
    "chunk_columns": ", ".join(CHUNKS.names(SQLITE)),
    "QUEUED": pb.BATCH_STATE_QUEUED,
    "RUNNING": pb.BATCH_STATE_RUNNING,
    "CANCELLING": pb.BATCH_STATE_CANCELLING,
    "CANCELLED": pb.BATCH_STATE_CANCELLED,
    "DONE": pb.BATCH_STATE_DONE,
    "SCHEDULED": pb.BATCH_STATE_SCHEDULED,
    "unfinished": "(" + ", ".join(str(s) for s in sorted(UNFINISHED_STATES)) + ")",
    "ended": "(" + ", ".join(str(s) for s in sorted(ENDED_STATES)) + ")",
    "planned": "'planned'",
    "claimed": "'claimed'",
    "sending": "'sending'",
}
_HEAD = re.compile(r"^-- (\w+)(?: \((sqlite|postgresql)\))? --$", re.MULTILINE)
_END = re.compile(r";\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\$(\d+)")


class Queries:
    """One dialect's queries by name."""

    def __init__(self, dialect: Dialect, text: str) -> None:
        self.dialect = dialect
        self._queries: dict[str, tuple[str, ...]] = {}
        shared: set[str] = set()
        parts = _HEAD.split(text)  # [preamble, name, dialect, body, name, dialect, body, ...]
        for name, only, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
            if name in shared or (only is None and name in self._queries):
                raise ValueError(f"queries.sql: {name} is there twice")
            if only is None:
                shared.add(name)
            elif only != dialect:
                continue
            elif name in self._queries:
                raise ValueError(f"queries.sql: {name} is there twice for {dialect}")
            self._queries[name] = self._statements(body)

    def _statements(self, body: str) -> tuple[str, ...]:
        lines = [line for line in body.splitlines() if not line.startswith("--")]
        found = []
        for statement in _END.split("\n".join(lines)):
            if not statement.strip():
                continue
            sql = " ".join(statement.format(**_WORDS).split())
            if self.dialect == SQLITE:
                sql = _PLACEHOLDER.sub(r"?\1", sql)
            found.append(sql)
        return tuple(found)

    def __getitem__(self, name: str) -> str:
        """The query `name`, one statement."""
        statements = self._queries[name]
        if len(statements) != 1:
            raise KeyError(f"{name} is {len(statements)} statements (use all)")
        return statements[0]

    def all(self, name: str) -> tuple[str, ...]:
        """The statements of `name`, in order."""
        return self._queries[name]

    def names(self) -> list[str]:
        return list(self._queries)


_TEXT = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
SQLITE_QUERIES = Queries(SQLITE, _TEXT)
POSTGRESQL_QUERIES = Queries(POSTGRESQL, _TEXT)
