"""Webhooks (CONTRACT.md rule 28) in one process: configuration, the retry policy, and a
real gateway delivering to a receiver that checks every delivery with the Standard
Webhooks library (`standardwebhooks.Webhook.verify`), as a receiver should.

The crash and replica cases run real processes: tests/test_webhooks_processes.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import json_format
from standardwebhooks import Webhook, WebhookVerificationError

from imgate.config.errors import ConfigError
from imgate.config.load import parse_config, sandbox_config
from imgate.config.model import WebhookConfig
from imgate.pipeline.webhooks import MAX_RETRY_S, next_attempt_in, retry_delay
from imgate.sandbox import SandboxServer
from imgate.sandbox.inbox import SANDBOX_WEBHOOK_SECRET
from imgate.store.memory import MemoryStore
from imgate.store.records import OutboxEvent, WebhookEvent
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, text_request
from tests.test_observability import _scrape, _value

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BACKEND = """
[backends.tx]
vendor = "tencent"
base_url = "http://127.0.0.1:9"
sdk_app_id = 1400000000
secret_key = "k"
admin_identifier = "administrator"
"""


def _parse(webhooks: str, callers: str = "", env: dict[str, str] | None = None) -> WebhookConfig:
    text = BACKEND + callers + webhooks
    config = parse_config(tomllib.loads(text), env or {"HOOK_SECRET": SECRET})
    return config.webhooks[0]


def test_a_webhook_with_its_defaults_and_secret_from_env() -> None:
    hook = _parse(
        '[[webhooks]]\nurl = "https://ops.example.com/hooks/imgate?token=t0ken"\n'
        'secret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
    )
    assert hook.url == "https://ops.example.com/hooks/imgate?token=t0ken"
    assert hook.secret == SECRET
    assert (hook.events, hook.callers, hook.retry_for_s, hook.timeout_s) == (
        ("batch.ended",),
        None,
        86_400.0,
        10.0,
    )
    assert SECRET not in repr(hook)
    assert hook.shown_url == "https://ops.example.com/hooks/imgate"  # no query in logs


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('url = "ftp://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]', "url"),
        ('url = "https://x/"\nsecret = "hunter2"\nevents = ["batch.ended"]', "secret"),
        ('url = "https://x/"\nsecret = "whsec_c2hvcnQ="\nevents = ["batch.ended"]', "secret"),
        ('url = "https://x/"\nsecret = "whsec_!!!!"\nevents = ["batch.ended"]', "secret"),
        ('url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.done"]', "events"),
        ('url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = []', "events"),
        ('url = "https://x/"\nsecret = "${HOOK_SECRET}"', "events"),
        (
            'url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
            'callers = ["billing"]',
            "callers",
        ),
        (
            'url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
            "timeout_s = 0",
            "timeout_s",
        ),
        (
            'url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
            "retry_for_s = inf",
            "retry_for_s",
        ),
        (
            'url = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\nurls = 1',
            "urls",
        ),
    ],
)
def test_bad_webhooks_name_the_key_and_never_show_the_secret(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse("[[webhooks]]\n" + body + "\n")
    assert caught.value.key == f"webhooks[0].{key}"
    assert SECRET.removeprefix("whsec_") not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_events_are_not_retried_past_their_batchs_retention() -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(
            '[store]\nbatch_retention_s = 3600\n[[webhooks]]\nurl = "https://x/"\n'
            'secret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
        )
    assert caught.value.key == "webhooks[0].retry_for_s"


def test_the_memory_outbox_is_bounded() -> None:
    store = MemoryStore()
    store.max_webhook_events = 2
    for n in range(3):
        store._write_events(f"b{n}", 1000.0 + n, [WebhookEvent(f"msg_b{n}", "https://x/", "t")])
    assert list(store._events) == ["msg_b1", "msg_b2"]  # the oldest forgotten


def test_two_webhooks_with_one_url_are_refused() -> None:
    one = '[[webhooks]]\nurl = "https://x/"\nsecret = "${HOOK_SECRET}"\nevents = ["batch.ended"]\n'
    with pytest.raises(ConfigError) as caught:
        _parse(one + one)
    assert caught.value.key == "webhooks[1].url"


def test_callers_name_configured_callers() -> None:
    callers = f'[callers.billing]\ntoken_sha256 = "{"ab" * 32}"\n'
    hook = _parse(
        '[[webhooks]]\nurl = "https://x/"\nsecret = "${HOOK_SECRET}"\n'
        'events = ["batch.ended", "recall.ended"]\ncallers = ["billing"]\n',
        callers,
    )
    assert (hook.callers, hook.events) == (("billing",), ("batch.ended", "recall.ended"))


def test_retry_waits_double_with_jitter_up_to_an_hour() -> None:
    assert [retry_delay(n, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [retry_delay(n, 0.999999) for n in (1, 2)] == pytest.approx([1.0, 2.0])
    assert retry_delay(13, 1.0) == MAX_RETRY_S
    assert retry_delay(10_000, 0.0) == MAX_RETRY_S / 2  # no overflow on a long outage


@pytest.mark.parametrize(
    ("attempts", "now", "expected"),
    [
        (1, 1000.0, 0.5),  # the first retry, well within retry_for_s
        (5, 1000.0, 8.0),
        (12, 1000.0, 1024.0),
        (12, 86_000.0 + 1000.0, 400.0),  # the last attempt at the deadline, not later
        (3, 86_400.0 + 1000.0, None),  # past retry_for_s after the end: given up
        (1, 90_000.0 + 1000.0, None),  # an event first tried after its deadline: tried once
    ],
)
def test_next_attempt_until_retry_for_s_after_the_batchs_end(
    attempts: int, now: float, expected: float | None
) -> None:
    event = OutboxEvent("msg_b", "https://x/", "batch.ended", "b", 1000.0, attempts, None, now)
    assert next_attempt_in(event, 86_400.0, 0.0, 0.0) == expected


@dataclass
class Receiver:
    """A receiver that verifies each delivery with the Standard Webhooks library and
    answers from `answers` in turn (then 204); a 3xx points at /elsewhere."""

    answers: list[int] = field(default_factory=list)
    url: str = ""
    deliveries: list[tuple[dict[str, str], bytes, object]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    """Each delivery's query string (which endpoint it was for)."""
    redirected: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError as exc:
            payload = exc
        self.deliveries.append((headers, body, payload))
        self.queries.append(request.query_string)
        self.arrived.set()
        status = self.answers.pop(0) if self.answers else 204
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.Response(status=204)

    async def until(self, count: int, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.deliveries) < count:
            self.arrived.clear()
            async with asyncio.timeout(deadline - time.monotonic()):
                await self.arrived.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    app.router.add_route("*", "/elsewhere", found.elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hooks?token=t0ken"
    yield found
    await runner.cleanup()


async def test_an_ended_batch_is_delivered_signed_retried_and_never_redirected(
    receiver: Receiver, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answers = [500, 307]  # fails, then redirects (a failure too), then takes it
    hook = WebhookConfig(receiver.url, SECRET, ("batch.ended",), timeout_s=5)
    running = await start_gateway(webhooks=(hook,), metrics_listen="127.0.0.1:0")
    request = text_request(["alice", "bob"], "tencent", request_id="hooked")
    await running.send(request)
    await receiver.until(3)
    await asyncio.sleep(0.3)  # nothing more comes
    assert len(receiver.deliveries) == 3
    assert receiver.redirected == 0
    ids = {headers["webhook-id"] for headers, _, _ in receiver.deliveries}
    bodies = {body for _, body, _ in receiver.deliveries}
    assert len(ids) == 1  # the same event each time ...
    assert len(bodies) == 1  # ... and the same bytes
    payloads = [payload for _, _, payload in receiver.deliveries]
    assert all(isinstance(p, dict) for p in payloads), payloads  # each one verified
    event = payloads[-1]
    assert isinstance(event, dict)
    batch = await running.stub.GetBatch(pb.GetBatchRequest(batch_id=event["data"]["batchId"]))
    assert ids == {f"msg_{batch.batch_id}"}
    assert event["type"] == "batch.ended"
    assert event["data"] == json_format.MessageToDict(batch)
    assert event["timestamp"] == batch.update_time.ToJsonString()  # when it ended
    async with aiohttp.ClientSession() as session:
        samples = await _scrape(session, running.gateway.metrics_port)
    assert _value(samples, "imgate_webhook_deliveries_total", result="rejected") == 2
    assert _value(samples, "imgate_webhook_deliveries_total", result="delivered") == 1
    assert await running.gateway.store.pending_webhook_events() == 0
    # Neither the secret nor a body reaches the gateway's log lines, nor the url's query
    # (the receiver's own access log, aiohttp.access, shows its query: not ours).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("imgate"))
    assert "delivery failed (HTTP 500)" in logged
    assert "delivering again" in logged
    for secret in (SECRET, SECRET.removeprefix("whsec_"), "t0ken", '"batchId"', "alice"):
        assert secret not in logged


async def test_callers_filter_and_events_given_up_after_retry_for_s(
    receiver: Receiver, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers = [503] * 100
    everyone = WebhookConfig(receiver.url, SECRET, ("batch.ended",), retry_for_s=2.5)
    nobody = WebhookConfig(receiver.url + "&other", SECRET, ("batch.ended",), callers=("x",))
    only_recalls = WebhookConfig(receiver.url + "&recalls", SECRET, ("recall.ended",))
    store = MemoryStore()
    running = await start_gateway(
        webhooks=(everyone, nobody, only_recalls), metrics_listen="127.0.0.1:0", store=store
    )
    await running.send(text_request(["carol"], "tencent"))
    assert await store.pending_webhook_events() == 1  # the anonymous caller's, one endpoint
    for _ in range(200):
        if not await store.pending_webhook_events():
            break
        await asyncio.sleep(0.1)
    assert await store.pending_webhook_events() == 0
    attempts = len(receiver.deliveries)
    assert 2 <= attempts <= 5  # 0.5-1 s, 1-2 s, ... until 2.5 s after the end
    async with aiohttp.ClientSession() as session:
        samples = await _scrape(session, running.gateway.metrics_port)
    assert _value(samples, "imgate_webhook_deliveries_total", result="rejected") == attempts
    assert _value(samples, "imgate_webhook_deliveries_total", result="expired") == 1
    assert "given up after" in caplog.text


async def test_a_recall_batchs_end_is_recall_ended(
    receiver: Receiver, start_gateway: StartGateway
) -> None:
    batches = WebhookConfig(receiver.url + "&batches", SECRET, ("batch.ended",))
    recalls = WebhookConfig(receiver.url + "&recalls", SECRET, ("recall.ended",))
    running = await start_gateway({"recallable": True}, webhooks=(batches, recalls))
    _, _, summary = await running.send(text_request(["erin", "frank"], "tencent"))
    await receiver.until(1)
    original = receiver.deliveries[0][2]
    assert isinstance(original, dict)
    batch_id = original["data"]["batchId"]
    recall = await running.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch_id))
    await receiver.until(2)
    await asyncio.sleep(0.3)  # nothing more comes
    assert receiver.queries == ["token=t0ken&batches", "token=t0ken&recalls"]
    event = receiver.deliveries[1][2]
    assert isinstance(event, dict)
    assert event["type"] == "recall.ended"
    ended = await running.stub.GetBatch(pb.GetBatchRequest(batch_id=recall.batch_id))
    assert event["data"] == json_format.MessageToDict(ended)
    assert (event["data"]["recallOf"], ended.accepted) == (batch_id, summary.accepted)


async def test_the_sandbox_inbox_keeps_verified_events_and_refuses_others(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    hooks = sandbox_config(sandbox.url, webhook_inbox=True).webhooks
    assert [h.url for h in hooks] == [f"{sandbox.url}/sandbox/webhooks/default"]
    running = await start_gateway(webhooks=hooks)
    async with aiohttp.ClientSession() as session:
        inbox = f"{sandbox.url}/sandbox/webhooks/default"
        async with session.put(inbox, json={"fail_next": 1}) as response:
            assert response.status == 200
        _, _, summary = await running.send(text_request(["dave"], "tencent"))
        deadline = time.monotonic() + 10
        events: list[dict[str, object]] = []
        while not events and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            async with session.get(inbox) as response:
                events = (await response.json())["events"]
        assert len(events) == 1
        event = events[0]["event"]
        assert isinstance(event, dict)
        assert (event["type"], event["data"]["summary"]["accepted"]) == ("batch.ended", 1)
        # Signed with another secret: refused and counted, never kept.
        forged = json.dumps(event).encode()
        other = Webhook("whsec_" + base64.b64encode(b"x" * 32).decode())
        now = time.time()
        stamp = datetime.fromtimestamp(now, tz=UTC)
        headers = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(now)),
            "webhook-signature": other.sign("msg_forged", stamp, forged),
        }
        async with session.post(inbox, data=forged, headers=headers) as response:
            assert response.status == 401
        async with session.get(f"{sandbox.url}/sandbox/webhooks") as response:
            assert (await response.json())["inboxes"]["default"] == {
                "events": 1,
                "refused": 1,
                "fail_next": 0,
            }
    assert summary.accepted == 1


def test_the_sandbox_secret_in_the_docs_is_the_inboxs() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "sandbox.md").read_text()
    assert f'secret = "{SANDBOX_WEBHOOK_SECRET}"' in docs
