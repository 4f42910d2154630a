"""The SQLite store's webhook outbox (store/sqlite.py writes the events in the transaction
that ends a batch; this is what the delivery loop, pipeline/webhooks.py, asks of it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from imgate.store.records import OutboxEvent, WebhookEvent
from imgate.store.sql.queries import SQLITE_QUERIES as Q
from imgate.store.sqlite_lists import SQLiteLists


def write_events(
    conn: sqlite3.Connection, batch_id: str, end_time: float, events: Sequence[WebhookEvent]
) -> None:
    """In the writer's transaction that ends `batch_id` at `end_time`: its events."""
    if events:
        conn.executemany(
            Q["insert_webhook_event"],
            [(e.event_id, e.url, e.type, batch_id, end_time) for e in events],
        )


class SQLiteOutbox(SQLiteLists):
    """Webhook events in a SQLite file."""

    async def claim_webhook_events(self, url: str, limit: int, lease_s: float) -> list[OutboxEvent]:
        now = self._clock()
        # Looked for on the reader first: a claim is a commit, an idle endpoint costs none.
        due = await self._read(
            lambda conn: conn.execute(Q["webhook_event_due"], (url, now)).fetchone()
        )
        if due is None:
            return []

        def op(conn: sqlite3.Connection) -> list[OutboxEvent]:
            rows = conn.execute(Q["claim_webhook_events"], (url, now, limit, lease_s))
            return [_event(r) for r in rows.fetchall()]

        return await self._write(op)

    async def fix_webhook_body(self, event_id: str, body: bytes) -> bytes:
        def op(conn: sqlite3.Connection) -> bytes:
            found = conn.execute(Q["fix_webhook_body"], (event_id, body)).fetchall()
            return bytes(found[0][0]) if found else body

        return await self._write(op)

    async def retry_webhook_event(self, event: OutboxEvent, delay_s: float) -> None:
        args = (event.event_id, event.url, event.attempts, self._clock() + delay_s)
        await self._write(lambda conn: conn.execute(Q["retry_webhook_event"], args))

    async def delete_webhook_event(self, event: OutboxEvent) -> None:
        args = (event.event_id, event.url)
        await self._write(lambda conn: conn.execute(Q["delete_webhook_event"], args))

    async def pending_webhook_events(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            count: int = conn.execute(Q["pending_webhook_events"]).fetchone()[0]
            return count

        return await self._read(op)


def _event(values: Sequence[object]) -> OutboxEvent:
    event = OutboxEvent(*values)  # type: ignore[arg-type]
    if event.body is not None:
        event.body = bytes(event.body)
    return event
