"""Webhooks (CONTRACT.md rule 28): the events a batch's end writes, and their delivery.

- `events_for(row)`: the events a batch's end writes to the store's outbox, one per
  `[[webhooks]]` endpoint that wants it (its `events`, its `callers`). The sink hands
  them to the store call that ends the batch, so they are committed with the end: a
  kill -9 loses none.
- One delivery loop per endpoint claims that endpoint's due events from the store, each
  with a lease (the attempt's timeout and a margin): another replica passes a claimed
  event by until its lease ends, so one replica delivers an event at a time. A replica
  that dies during an attempt leaves the event to be delivered again after the lease: at
  least once, always with the same `webhook-id`.
- An attempt POSTs the event's body, fixed at its first attempt (every retry sends the
  same bytes), signed by the Standard Webhooks library (`Webhook.sign`: headers
  `webhook-id`, `webhook-timestamp` = now, `webhook-signature`), within `timeout_s`,
  never following a redirect. A 2xx answer deletes it from the outbox; anything else (an
  answer, a timeout, no connection) tries again after `retry_delay`, until `retry_for_s`
  after the batch ended, then the event is given up (deleted, logged, counted).
- The secret and the bodies never reach a log line: endpoints are logged as
  scheme://host/path, events by their id and batch id. An endpoint that starts failing
  logs one line, and one more when it delivers again.

The body: `{"type": "batch.ended", "timestamp": <when the batch ended, RFC 3339>,
"data": <the Batch as GetBatch answers it, in protobuf's canonical JSON>}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from google.protobuf import json_format, timestamp_pb2
from standardwebhooks import Webhook

from imgate import __version__
from imgate.config.model import WEBHOOK_EVENT_TYPES, WebhookConfig
from imgate.observability.logs import set_log_context
from imgate.observability.metrics import Metrics
from imgate.pipeline.failures import log_failure
from imgate.store.base import Store
from imgate.store.records import BatchRow, OutboxEvent, WebhookEvent
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.webhooks")

BATCH_ENDED, RECALL_ENDED = WEBHOOK_EVENT_TYPES

# Retries: 1 s after the first failure, doubling up to an hour between attempts (a day of
# retries is about 35 attempts), half of each wait random so that the events of an
# endpoint that comes back do not all arrive at once.
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 3600.0
# A claimed event is not due for others for its attempt's timeout plus this: the body's
# and the result's store writes. An attempt that outlives it may be made twice.
LEASE_MARGIN_S = 10.0
CLAIM_AT_ONCE = 16
"""Events of one endpoint claimed, and attempted concurrently, at a time."""
POLL_S = 1.0
"""An idle endpoint looks for due events this often (a batch ended here wakes it at once)."""
PENDING_EVERY_S = 5.0
"""How often imgate_webhook_pending is read from the store."""


def event_id(row: BatchRow) -> str:
    """The `webhook-id` of a batch's end: one event per batch, the same on every attempt."""
    return f"msg_{row.batch_id}"


def event_type(row: BatchRow) -> str:
    """What ended: a batch, or a recall batch (CONTRACT rule 27: it names the batch it
    recalls in `recall_of`)."""
    return RECALL_ENDED if row.recall_of else BATCH_ENDED


def retry_delay(attempts: int, jitter: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: FIRST_RETRY_S doubling
    with each, at most MAX_RETRY_S, its second half scaled by `jitter` (in [0, 1))."""
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2.0 ** min(max(attempts - 1, 0), 32))
    return ceiling / 2 + jitter * ceiling / 2


def next_attempt_in(
    event: OutboxEvent, retry_for_s: float, elapsed_s: float, jitter: float
) -> float | None:
    """After a failed attempt of `event` that took `elapsed_s`: seconds until the next
    one, or None when `retry_for_s` after the batch's end has passed (give up). The last
    attempt is made at that deadline, not skipped."""
    now = event.now + elapsed_s
    deadline = event.create_time + retry_for_s
    if now >= deadline:
        return None
    return min(retry_delay(event.attempts, jitter), deadline - now)


def event_body(kind: str, end_time: float, batch: pb.Batch) -> bytes:
    """The JSON body of an event (what is signed and sent, byte for byte)."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(end_time * 1e9))
    document = {
        "type": kind,
        "timestamp": stamp.ToJsonString(),
        "data": json_format.MessageToDict(batch),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class _Endpoint:
    config: WebhookConfig
    signer: Webhook = field(repr=False)
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False
    """Its last attempt failed (said once, until one is delivered)."""


class Webhooks:
    """The gateway's `[[webhooks]]`: `events_for` for the sinks, `start`/`stop` for the
    delivery loops. `render` builds the Batch message GetBatch answers (api.messages)."""

    def __init__(
        self,
        endpoints: Sequence[WebhookConfig],
        store: Store,
        metrics: Metrics,
        render: Callable[[BatchRow], pb.Batch],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._endpoints = [_Endpoint(config, Webhook(config.secret)) for config in endpoints]
        self._store = store
        self._metrics = metrics
        self._render = render
        self._jitter = jitter
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._store_failing = False

    def events_for(self, row: BatchRow) -> tuple[WebhookEvent, ...]:
        """The events the end of `row` writes: one per endpoint that wants it."""
        kind, identifier = event_type(row), event_id(row)
        return tuple(
            WebhookEvent(identifier, endpoint.config.url, kind)
            for endpoint in self._endpoints
            if kind in endpoint.config.events
            and (endpoint.config.callers is None or row.caller in endpoint.config.callers)
        )

    def ended(self) -> None:
        """A batch ended here: look for its events now rather than at the next poll."""
        for endpoint in self._endpoints:
            endpoint.woken.set()

    async def start(self) -> None:
        """Start the delivery loops (the store is open)."""
        if not self._endpoints:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CLAIM_AT_ONCE * len(self._endpoints)),
            headers={"User-Agent": f"imgate/{__version__}"},
            # A receiver's cookies are not the next delivery's business.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._tasks = [asyncio.create_task(self._deliver(e)) for e in self._endpoints]
        self._tasks.append(asyncio.create_task(self._count_pending()))

    async def stop(self) -> None:
        """Stop delivering: attempts in flight are cut, their events stay in the outbox
        (due again when their lease ends, here after a restart or on another replica)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the loops ----------------------------------------------------------------------

    async def _deliver(self, endpoint: _Endpoint) -> None:
        lease_s = endpoint.config.timeout_s + LEASE_MARGIN_S
        while True:
            endpoint.woken.clear()
            try:
                claimed = await self._store.claim_webhook_events(
                    endpoint.config.url, CLAIM_AT_ONCE, lease_s
                )
            except Exception as exc:
                self._store_trouble(exc)
                claimed = []
            else:
                self._store_failing = False
            if claimed:
                async with asyncio.TaskGroup() as group:
                    for event in claimed:
                        group.create_task(self._attempt(endpoint, event))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await endpoint.woken.wait()

    async def _count_pending(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # the delivery loops report the store
                self._metrics.webhook_pending.set(await self._store.pending_webhook_events())
            await asyncio.sleep(PENDING_EVERY_S)

    def _store_trouble(self, exc: BaseException) -> None:
        self._metrics.store_errors.labels("webhooks").inc()
        if not self._store_failing:  # one line per episode: the loops look every second
            log_failure(
                log, "webhooks: the store's outbox cannot be used", exc, self._store.is_outage
            )
        self._store_failing = True

    # -- one attempt ----------------------------------------------------------------------

    async def _attempt(self, endpoint: _Endpoint, event: OutboxEvent) -> None:
        started = time.monotonic()
        config = endpoint.config
        set_log_context(batch_id=event.batch_id)  # this attempt's task only
        try:
            body = event.body if event.body is not None else await self._fix_body(event)
            if body is None:
                await self._store.delete_webhook_event(event)
                log.warning(
                    "webhook %s: event %s dropped: batch %s is no longer stored",
                    config.shown_url,
                    event.event_id,
                    event.batch_id,
                )
                return
            result, detail = await self._post(endpoint, event, body)
            self._metrics.webhook_deliveries.labels(result).inc()
            log.debug(
                "webhook %s: event %s (batch %s) attempt %d: %s",
                config.shown_url,
                event.event_id,
                event.batch_id,
                event.attempts,
                detail,
            )
            if result == "delivered":
                await self._store.delete_webhook_event(event)
                if endpoint.failing:
                    log.info("webhook %s: delivering again", config.shown_url)
                    endpoint.failing = False
                return
            if not endpoint.failing:
                log.warning(
                    "webhook %s: delivery failed (%s); retrying with backoff for up to %.0fs"
                    " after each batch's end",
                    config.shown_url,
                    detail,
                    config.retry_for_s,
                )
                endpoint.failing = True
            delay = next_attempt_in(
                event, config.retry_for_s, time.monotonic() - started, self._jitter()
            )
            if delay is not None:
                await self._store.retry_webhook_event(event, delay)
                return
            await self._store.delete_webhook_event(event)
            self._metrics.webhook_deliveries.labels("expired").inc()
            log.warning(
                "webhook %s: event %s (batch %s) given up after %d attempts over %.0fs (%s)",
                config.shown_url,
                event.event_id,
                event.batch_id,
                event.attempts,
                config.retry_for_s,
                detail,
            )
        except Exception as exc:
            # The event stays claimed until its lease ends, then is tried again.
            self._store_trouble(exc)

    async def _fix_body(self, event: OutboxEvent) -> bytes | None:
        """The event's body, fixed now for every later attempt; None if the batch is gone."""
        row = await self._store.get_batch(event.batch_id)
        if row is None:
            return None
        body = event_body(event.type, event.create_time, self._render(row))
        return await self._store.fix_webhook_body(event.event_id, body)

    async def _post(self, endpoint: _Endpoint, event: OutboxEvent, body: bytes) -> tuple[str, str]:
        """(result, detail): delivered, rejected (any other answer), timeout or error."""
        assert self._session is not None
        timeout_s = endpoint.config.timeout_s
        now = datetime.datetime.now(tz=datetime.UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": endpoint.signer.sign(event.event_id, now, body),
        }
        try:
            async with self._session.post(
                endpoint.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                # A redirect is an answer, not a delivery: following it would hand the
                # signed event to whatever host the answer names.
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            return "timeout", f"no answer within {timeout_s:g}s"
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            return "error", f"cannot connect: {reason}"
        except aiohttp.ClientError as exc:
            # Its type only: some messages hold the url, which may hold a token.
            return "error", type(exc).__name__
        return ("delivered" if 200 <= status < 300 else "rejected"), f"HTTP {status}"
