"""Quotas, vendor refusals, faults, deadlines and cancellation, with time scaled down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from imgate.sandbox import Clock, FaultRule, SandboxConfig, SandboxServer
from imgate.store.sqlite import SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.tencent.emulator import TencentSettings
from imgate.vendors.yunxin_v1.emulator import YunxinV1Settings
from tests.conftest import StartGateway, text_request

WINDOW_S = 1.0


def _ids(count: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


class TestCallQuota:
    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        return SandboxConfig(
            seed=1,
            vendors={
                "yunxin_v1": YunxinV1Settings(call_limit=4, call_window_s=WINDOW_S, block_s=3.0)
            },
        )

    async def test_paced_exactly_to_the_call_window(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {"call_limit": 4, "call_window_s": WINDOW_S, "recipients_per_call": 10}
        )
        started = time.monotonic()
        _, _outcomes, summary = await gateway.send(text_request(_ids(240), "yunxin_v1"))
        elapsed = time.monotonic() - started
        assert summary.accepted == 240
        stats = sandbox.state.stats("yunxin_v1")
        assert not stats.refusals  # never a 416
        assert stats.peak_calls_in_window <= 4
        # 24 calls at 4 per window: 5 windows after the first 4 calls at the very least.
        ideal = 5 * WINDOW_S
        assert elapsed >= ideal * 0.99
        assert elapsed <= ideal * 1.15, f"{elapsed:.2f}s vs ideal {ideal:.2f}s"

    async def test_small_batch_is_not_stuck_behind_a_large_one(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {"call_limit": 4, "call_window_s": WINDOW_S, "recipients_per_call": 10}
        )
        large = asyncio.create_task(gateway.send(text_request(_ids(400), "yunxin_v1")))
        await asyncio.sleep(0.3)  # the large batch has taken the first window
        started = time.monotonic()
        _, _, small = await gateway.send(text_request(_ids(20, "s"), "yunxin_v1"))
        small_s = time.monotonic() - started
        assert small.accepted == 20
        assert not large.done()  # 40 calls at 4 per window: ~10 s
        assert small_s < 3 * WINDOW_S  # took turns, not queued behind 36 calls
        large.cancel()


class TestRecipientQuota:
    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        return SandboxConfig(
            seed=1,
            vendors={"tencent": TencentSettings(recipient_limit=200, recipient_window_s=WINDOW_S)},
        )

    async def test_paced_exactly_to_the_recipient_window(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {"recipient_limit": 200, "recipient_window_s": WINDOW_S, "recipients_per_call": 50}
        )
        started = time.monotonic()
        _, _outcomes, summary = await gateway.send(text_request(_ids(1000), "tencent"))
        elapsed = time.monotonic() - started
        assert summary.accepted == 1000
        stats = sandbox.state.stats("tencent")
        assert not stats.refusals
        assert stats.peak_recipients_in_window <= 200
        ideal = 4 * WINDOW_S  # 1000 recipients at 200 per window
        assert ideal * 0.99 <= elapsed <= ideal * 1.15, f"{elapsed:.2f}s"


class TestStricterVendor:
    """The vendor allows fewer calls than the gateway thinks (another system shares it)."""

    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        return SandboxConfig(
            seed=1,
            vendors={
                "yunxin_v1": YunxinV1Settings(call_limit=3, call_window_s=WINDOW_S, block_s=1.5)
            },
        )

    async def test_block_mid_batch_every_recipient_accepted_once(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {
                "call_limit": 6,
                "call_window_s": WINDOW_S,
                "recipients_per_call": 10,
                "block_s": 1.5,
                "max_in_flight": 2,
                "max_attempts": 10,
            }
        )
        _, outcomes, summary = await gateway.send(text_request(_ids(120), "yunxin_v1"))
        assert summary.accepted == 120
        assert all(o.state == pb.DELIVERY_STATE_ACCEPTED for o in outcomes)
        stats = sandbox.state.stats("yunxin_v1")
        assert stats.refusals.get("416", 0) >= 1  # the vendor did refuse
        assert stats.duplicate_deliveries == 0
        assert sorted(d.recipient for d in sandbox.state.deliveries("yunxin_v1")) == _ids(120)
        # Quiet during a block: only the calls already in flight (max_in_flight = 2) when a
        # 416 came can draw one; nothing is sent into the block. The vendor takes 3 calls
        # per episode, so 12 chunks make at most 4 episodes.
        refused = stats.refusals["416"]
        assert refused <= 2 * 4
        assert summary.vendor_calls == 12 + refused
        assert any(o.attempts > 1 for o in outcomes)

    async def test_list_backends_shows_the_block(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {"call_limit": 100, "recipients_per_call": 10, "block_s": 30.0, "max_in_flight": 1}
        )
        await gateway.send(text_request(_ids(40), "yunxin_v1"), timeout=1.0)
        reply = await gateway.stub.ListBackends(pb.ListBackendsRequest())
        states = {b.name: b for b in reply.backends}
        blocked = states["yunxin_v1"]
        assert blocked.state == pb.BACKEND_STATE_BLOCKED
        assert 20 < blocked.blocked_until.seconds - time.time() <= 30
        assert states["tencent"].state == pb.BACKEND_STATE_SERVING

    async def test_block_past_the_deadline_fails_rate_limited(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {
                "call_limit": 100,
                "call_window_s": WINDOW_S,
                "recipients_per_call": 10,
                "block_s": 5.0,
                "max_in_flight": 1,
            }
        )
        _, outcomes, summary = await gateway.send(text_request(_ids(60), "yunxin_v1"), timeout=2.0)
        assert summary.total == 60
        assert summary.accepted == 30  # three calls passed, the 4th drew the 416
        refused = [o for o in outcomes if o.state != pb.DELIVERY_STATE_ACCEPTED]
        assert {o.reason for o in refused} <= {
            pb.FAILURE_REASON_RATE_LIMITED,
            pb.FAILURE_REASON_NOT_ATTEMPTED,
        }
        assert any(o.reason == pb.FAILURE_REASON_RATE_LIMITED for o in refused)
        assert all(o.state == pb.DELIVERY_STATE_FAILED for o in refused)


class TestExpiredSignature:
    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        # The vendor's clock is two days ahead: every one-day UserSig looks expired (70001).
        return SandboxConfig(seed=1, clock=Clock(wall=lambda: time.time() + 2 * 86400))

    async def test_expired_signature_is_regenerated_once(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway()
        _, outcomes, _summary = await gateway.send(text_request(["a", "b"], "tencent"))
        assert {(o.state, o.reason, o.vendor_code, o.attempts) for o in outcomes} == {
            (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_AUTH_FAILED, "70001", 2)
        }
        assert sandbox.state.stats("tencent").refusals == {"70001": 2}


FAULTS = [
    # kind, extra, expected state, expected reason, attempts, delivered
    ("refuse_502", {}, pb.DELIVERY_STATE_ACCEPTED, pb.FAILURE_REASON_UNSPECIFIED, 2, True),
    (
        "latency",
        {"delay_s": 0.2},
        pb.DELIVERY_STATE_ACCEPTED,
        pb.FAILURE_REASON_UNSPECIFIED,
        1,
        True,
    ),
    ("hang", {"delay_s": 5}, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_TIMEOUT, 1, True),
    ("error_500", {}, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, 1, True),
    ("malformed", {}, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, 1, True),
    ("html", {}, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, 1, True),
    ("drop", {}, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, 1, False),
]


@pytest.mark.parametrize("backend", ["yunxin_v1", "yunxin_v2", "tencent"])
@pytest.mark.parametrize(
    ("kind", "extra", "state", "reason", "attempts", "delivered"),
    FAULTS,
    ids=[f[0] for f in FAULTS],
)
async def test_fault_maps_to_state(
    backend: str,
    kind: str,
    extra: dict[str, float],
    state: int,
    reason: int,
    attempts: int,
    delivered: bool,
    sandbox: SandboxServer,
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway({"request_timeout_s": 1.0})
    sandbox.state.set_faults(backend, [FaultRule(kind=kind, times=1, **extra)])  # type: ignore[arg-type]
    _, outcomes, _summary = await gateway.send(text_request(["alice", "bob"], backend))
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert (outcome.state, outcome.reason) == (state, reason), outcome
        assert outcome.attempts == attempts
    deliveries = sandbox.state.deliveries(backend)
    assert sorted(d.recipient for d in deliveries) == (["alice", "bob"] if delivered else [])
    assert sandbox.state.stats(backend).duplicate_deliveries == 0


async def test_retries_stop_at_max_attempts(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"max_attempts": 3})
    sandbox.state.set_faults("tencent", [FaultRule(kind="refuse_502")])
    _, outcomes, _ = await gateway.send(text_request(["a"], "tencent"))
    (outcome,) = outcomes
    assert outcome.state == pb.DELIVERY_STATE_FAILED
    assert outcome.reason == pb.FAILURE_REASON_VENDOR_UNAVAILABLE
    assert outcome.attempts == 3
    assert sandbox.state.stats("tencent").calls_received == 3


async def test_connection_refused_is_retried_then_failed(start_gateway: StartGateway) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused before any write.
    gateway = await start_gateway({"base_url": "http://127.0.0.1:9", "max_attempts": 2})
    _, outcomes, summary = await gateway.send(text_request(["a", "b"], "yunxin_v2"))
    assert {(o.state, o.reason, o.attempts) for o in outcomes} == {
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_VENDOR_UNAVAILABLE, 2)
    }
    assert summary.vendor_calls == 2


async def test_cancel_stops_new_vendor_calls(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 2})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.2)])
    call = gateway.stub.BatchSend(text_request(_ids(2000), "tencent"), timeout=30)
    async for message in call:
        if message.outcomes:
            break
    call.cancel()
    await asyncio.sleep(0.5)  # calls in flight at the cancel may still land
    received = sandbox.state.stats("tencent").calls_received
    await asyncio.sleep(1.0)
    assert sandbox.state.stats("tencent").calls_received == received
    assert received < 200  # far from the whole batch


async def test_deadline_ends_stream_with_every_outcome(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(
        {"recipients_per_call": 10, "call_limit": 2, "call_window_s": 10.0}
    )
    _, outcomes, summary = await gateway.send(text_request(_ids(100), "yunxin_v1"), timeout=1.5)
    assert len(outcomes) == summary.total == 100
    assert summary.accepted == 20
    not_sent = [o for o in outcomes if o.state != pb.DELIVERY_STATE_ACCEPTED]
    assert {(o.state, o.reason, o.attempts) for o in not_sent} == {
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED, 0)
    }
    assert sandbox.state.stats("yunxin_v1").calls_received == 2


async def test_request_id_replays_attaches_and_refuses_mismatch(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 1})
    sandbox.state.set_faults("yunxin_v2", [FaultRule(kind="latency", delay_s=0.05)])
    request = text_request(_ids(100), "yunxin_v2", request_id="batch-1")
    first = asyncio.create_task(gateway.send(request))
    await asyncio.sleep(0.2)  # attach while it runs
    second = asyncio.create_task(gateway.send(request))
    (_, outcomes_1, summary_1), (_, outcomes_2, summary_2) = await asyncio.gather(first, second)
    key = lambda o: o.index  # noqa: E731
    assert sorted(outcomes_1, key=key) == sorted(outcomes_2, key=key)
    assert len(outcomes_1) == 100
    assert summary_1 == summary_2
    calls = sandbox.state.stats("yunxin_v2").calls_received
    assert calls == 10
    # After it finished: replayed, nothing sent again.
    _, outcomes_3, summary_3 = await gateway.send(request)
    assert sorted(outcomes_3, key=key) == sorted(outcomes_1, key=key)
    assert summary_3 == summary_1
    assert sandbox.state.stats("yunxin_v2").calls_received == calls
    assert sandbox.state.stats("yunxin_v2").duplicate_deliveries == 0
    # Same id, another payload: refused, nothing sent.
    other = text_request(_ids(100), "yunxin_v2", text="different", request_id="batch-1")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(other)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sandbox.state.stats("yunxin_v2").calls_received == calls


async def test_request_id_batch_outlives_its_first_caller(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # Rules 9-11: a request_id batch is durable once accepted; the first caller going away
    # does not cancel it, and a retry attaches to it (it used to end 150+ of 200
    # recipients NOT_ATTEMPTED).
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 1})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.05)])
    request = text_request(_ids(200), "tencent", request_id="cancelled-1")
    call = gateway.stub.BatchSend(request, timeout=30)
    async for message in call:
        if message.outcomes:
            break
    call.cancel()
    await asyncio.sleep(0.3)
    assert sandbox.state.stats("tencent").calls_received > 3  # still sending, no caller
    _, outcomes, summary = await gateway.send(request)
    assert sorted(o.recipient_id for o in outcomes) == _ids(200)
    assert {o.state for o in outcomes} == {pb.DELIVERY_STATE_ACCEPTED}
    assert summary.accepted == 200
    delivered = [d.recipient for d in sandbox.state.deliveries("tencent")]
    assert sorted(delivered) == _ids(200)
    assert sandbox.state.stats("tencent").calls_received == 20


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_bound_batch_is_cancelled_with_its_caller(
    sandbox: SandboxServer, start_gateway: StartGateway, store: str, tmp_path: Path
) -> None:
    # Rule 10: without request_id the batch goes with its caller; what was never sent
    # ends FAILED/NOT_ATTEMPTED, readable with WatchBatch. On every store: a SQLite-only
    # regression once kept a cancelled batch sending (issue 15).
    durable = SQLiteStore(tmp_path / "imgate.db") if store == "sqlite" else None
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 1}, store=durable)
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.1)])
    call = gateway.stub.BatchSend(text_request(_ids(200), "tencent"), timeout=30)
    batch_id = ""
    async for message in call:
        batch_id = batch_id or message.batch_id
        if message.outcomes:
            break
    call.cancel()
    await asyncio.sleep(0.5)
    calls = sandbox.state.stats("tencent").calls_received
    outcomes = [
        o
        async for m in gateway.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id))
        for o in m.outcomes
    ]
    assert sorted(o.recipient_id for o in outcomes) == _ids(200)
    delivered = {d.recipient for d in sandbox.state.deliveries("tencent")}
    failed = [o for o in outcomes if o.state == pb.DELIVERY_STATE_FAILED]
    assert len(failed) >= 150
    assert {o.reason for o in failed} == {pb.FAILURE_REASON_NOT_ATTEMPTED}
    assert not {o.recipient_id for o in failed} & delivered
    batch = await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id))
    assert batch.state == pb.BATCH_STATE_CANCELLED
    await asyncio.sleep(0.3)
    assert sandbox.state.stats("tencent").calls_received == calls
