"""The memory store's webhook outbox (store/memory.py writes the events when a batch ends;
this is what the delivery loop, pipeline/webhooks.py, asks of it).

Events wait until delivered or given up (a day by default), or until purge; at most
`max_webhook_events` events are kept, the oldest forgotten first (sandbox mode's inbox
takes them at once: only an endpoint that stays down fills the outbox).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from imgate.store.base import Store
from imgate.store.records import OutboxEvent, WebhookEvent

DEFAULT_MAX_WEBHOOK_EVENTS = 100_000


@dataclasses.dataclass(slots=True)
class _Delivery:
    """One endpoint's delivery of an event."""

    next_attempt: float
    attempts: int = 0


@dataclasses.dataclass(slots=True)
class _Event:
    batch_id: str
    type: str
    create_time: float
    deliveries: dict[str, _Delivery]
    """By endpoint url."""
    body: bytes | None = None


class MemoryOutbox(Store):
    """Webhook events in a dict, by event id, oldest first."""

    _clock: Callable[[], float]

    def __init__(self) -> None:
        super().__init__()
        self._events: dict[str, _Event] = {}
        self._pending = 0
        self.max_webhook_events = DEFAULT_MAX_WEBHOOK_EVENTS

    def _write_events(self, batch_id: str, end_time: float, events: Sequence[WebhookEvent]) -> None:
        """The batch `batch_id` ended at `end_time`: its events."""
        for event in events:
            kept = self._events.setdefault(
                event.event_id, _Event(batch_id, event.type, end_time, {})
            )
            if event.url not in kept.deliveries:
                kept.deliveries[event.url] = _Delivery(end_time)
                self._pending += 1
        while len(self._events) > self.max_webhook_events:
            self._forget_event(next(iter(self._events)))

    def _forget_event(self, event_id: str) -> None:
        self._pending -= len(self._events.pop(event_id).deliveries)

    async def claim_webhook_events(self, url: str, limit: int, lease_s: float) -> list[OutboxEvent]:
        now = self._clock()
        # A scan: the memory store is sandbox mode's, with few events waiting.
        due = sorted(
            (
                (delivery.next_attempt, event_id)
                for event_id, event in self._events.items()
                if (delivery := event.deliveries.get(url)) and delivery.next_attempt <= now
            )
        )[:limit]
        claimed = []
        for _, event_id in due:
            event = self._events[event_id]
            delivery = event.deliveries[url]
            delivery.attempts += 1
            delivery.next_attempt = now + lease_s
            claimed.append(
                OutboxEvent(
                    event_id,
                    url,
                    event.type,
                    event.batch_id,
                    event.create_time,
                    delivery.attempts,
                    event.body,
                    now,
                )
            )
        return claimed

    async def fix_webhook_body(self, event_id: str, body: bytes) -> bytes:
        event = self._events.get(event_id)
        if event is None:
            return body
        if event.body is None:
            event.body = body
        return event.body

    async def retry_webhook_event(self, event: OutboxEvent, delay_s: float) -> None:
        kept = self._events.get(event.event_id)
        delivery = None if kept is None else kept.deliveries.get(event.url)
        if delivery is not None and delivery.attempts == event.attempts:
            delivery.next_attempt = self._clock() + delay_s

    async def delete_webhook_event(self, event: OutboxEvent) -> None:
        kept = self._events.get(event.event_id)
        if kept is None or kept.deliveries.pop(event.url, None) is None:
            return
        self._pending -= 1
        if not kept.deliveries:
            del self._events[event.event_id]

    async def pending_webhook_events(self) -> int:
        return self._pending

    def _purge_events(self, ended_before: float) -> None:
        for event_id in [i for i, e in self._events.items() if e.create_time < ended_before]:
            self._forget_event(event_id)
