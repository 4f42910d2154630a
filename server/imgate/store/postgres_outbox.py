"""The PostgreSQL store's webhook outbox (store/postgres.py writes the events in the
statement that ends a batch; this is what the delivery loop, pipeline/webhooks.py, asks
of it). Leases and due times are the database's clock, shared by every replica: an event
claimed by one is passed by the others (SKIP LOCKED) until its lease ends."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from imgate.store.postgres_lists import PostgresLists
from imgate.store.records import OutboxEvent, WebhookEvent
from imgate.store.sql.queries import POSTGRESQL_QUERIES as Q


def event_arrays(events: Sequence[WebhookEvent]) -> tuple[list[str], list[str], list[str]]:
    """`events` as the three arrays (ids, urls, types) the ending statements take."""
    return [e.event_id for e in events], [e.url for e in events], [e.type for e in events]


def _event(record: asyncpg.Record) -> OutboxEvent:
    event = OutboxEvent(*record.values())
    if event.body is not None:
        event.body = bytes(event.body)
    return event


class PostgresOutbox(PostgresLists):
    """Webhook events in a PostgreSQL schema, shared by every replica."""

    async def claim_webhook_events(self, url: str, limit: int, lease_s: float) -> list[OutboxEvent]:
        # Looked for first: a claim is a commit, an idle endpoint costs none.
        if await self.pool.fetchval(Q["webhook_event_due"], url) is None:
            return []
        claimed = await self.pool.fetch(Q["claim_webhook_events"], url, limit, lease_s)
        rows = self._committed(claimed)
        return [_event(r) for r in rows]

    async def fix_webhook_body(self, event_id: str, body: bytes) -> bytes:
        found = self._committed(await self.pool.fetchval(Q["fix_webhook_body"], event_id, body))
        return body if found is None else bytes(found)

    async def retry_webhook_event(self, event: OutboxEvent, delay_s: float) -> None:
        args = (event.event_id, event.url, event.attempts, delay_s)
        self._committed(await self.pool.execute(Q["retry_webhook_event"], *args))

    async def delete_webhook_event(self, event: OutboxEvent) -> None:
        args = (event.event_id, event.url)
        self._committed(await self.pool.execute(Q["delete_webhook_event"], *args))

    async def pending_webhook_events(self) -> int:
        count: int = await self.pool.fetchval(Q["pending_webhook_events"])
        return count
