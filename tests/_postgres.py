"""A PostgreSQL schema of its own for a test: `IMGATE_TEST_POSTGRES_URL` (default: the
local trust-auth server), skipped with a clear message when unreachable, unless
`IMGATE_REQUIRE_SERVICES=1` (CI), where a missing server fails the test."""

from __future__ import annotations

import asyncio
import os
import secrets
import urllib.parse

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    return os.environ.get("IMGATE_TEST_POSTGRES_URL", DEFAULT_URL)


def with_schema(url: str, schema: str) -> str:
    """`url` with `?search_path=schema` (asyncpg passes it to the server as a setting)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != "search_path"] + [("search_path", schema)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def reachable_or_skip() -> str:
    """The base URL, once a connection to it worked; else skip (or fail in CI)."""
    url = base_url()
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = (
            f"PostgreSQL not reachable at IMGATE_TEST_POSTGRES_URL ({url}): {exc}; "
            "start one (see .ci/run) or set the variable"
        )
        if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    await conn.close()
    return url


def new_schema() -> str:
    return f"imgate_test_{secrets.token_hex(6)}"


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def drop_schema_sync(url: str, schema: str) -> None:
    asyncio.run(drop_schema(url, schema))
