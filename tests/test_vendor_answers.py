"""CONTRACT §8 rule 24 end to end, and how vendor answers are logged and reported."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from aiohttp import web

from imgate.pipeline.answers import read_bounded
from imgate.sandbox import FaultRule, SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.yunxin_v2.emulator import YunxinV2Settings
from tests.conftest import VENDORS, StartGateway, text_request


@pytest.mark.parametrize("backend", VENDORS)
async def test_answer_over_max_response_bytes_makes_the_call_uncertain(
    backend: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    sandbox.state.set_faults(backend, [FaultRule(kind="oversized", times=1)])
    _, outcomes, summary = await gateway.send(text_request(["a", "b"], backend))
    assert [o.state for o in outcomes] == [pb.DELIVERY_STATE_UNCERTAIN] * 2
    assert "max_response_bytes" in outcomes[0].detail
    assert summary.uncertain == 2
    assert summary.vendor_calls == 1  # never resent


async def test_a_small_max_response_bytes_applies_to_normal_answers(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"max_response_bytes": 16})
    _, outcomes, _ = await gateway.send(text_request(["a"], "yunxin_v1"))
    assert outcomes[0].state == pb.DELIVERY_STATE_UNCERTAIN


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read_bytes = 0

    async def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.read_bytes : self.read_bytes + n]
        self.read_bytes += len(chunk)
        return chunk


async def test_bounded_reader_never_reads_far_beyond_the_limit() -> None:
    stream = _Stream(b"x" * (10 << 20))
    assert await read_bounded(stream, None, 1000) is None
    assert stream.read_bytes <= 1001
    declared = _Stream(b"x" * 10)
    assert await read_bounded(declared, 5000, 1000) is None
    assert declared.read_bytes == 0
    assert await read_bounded(_Stream(b"{}"), 2, 2) == b"{}"


async def test_tencent_ok_without_error_list_is_accepted(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # The vendor quirk (vendors.md §7.3): OK, no ErrorList, although ghost1 does not exist.
    # The answer cannot be told from a real success: ACCEPTED, documented in
    # docs/vendor-mapping.md rather than stamped on every outcome.
    gateway = await start_gateway()
    sandbox.state.set_faults("tencent", [FaultRule(kind="silent_unknown", times=1)])
    _, outcomes, _ = await gateway.send(text_request(["a", "ghost1"], "tencent"))
    assert [o.state for o in outcomes] == [pb.DELIVERY_STATE_ACCEPTED] * 2
    assert all(o.detail == "" for o in outcomes)
    delivered = {d.recipient for d in sandbox.state.deliveries("tencent")}
    assert delivered == {"a"}


async def test_yunxin_v2_answer_missing_a_recipient_makes_it_uncertain(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    sandbox.state.set_faults("yunxin_v2", [FaultRule(kind="silent_unknown", times=1)])
    _, outcomes, summary = await gateway.send(text_request(["a", "ghost1"], "yunxin_v2"))
    states = {o.recipient_id: o.state for o in outcomes}
    assert states == {"a": pb.DELIVERY_STATE_ACCEPTED, "ghost1": pb.DELIVERY_STATE_UNCERTAIN}
    assert (summary.accepted, summary.uncertain) == (1, 1)


async def test_vendor_time_is_returned_for_recall(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    for backend in ("yunxin_v1", "yunxin_v2"):
        _, outcomes, _ = await gateway.send(
            text_request(["a"], backend, options=pb.SendOptions(return_message_ids=True))
        )
        assert outcomes[0].vendor_message_id
        assert outcomes[0].vendor_time_ms > 1_600_000_000_000, backend


async def test_auth_failures_are_logged_at_warning_once_per_episode(
    sandbox: SandboxServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway()
    backend = gateway.gateway.backends["yunxin_v1"]
    good = backend.translator
    bad_config = dataclasses.replace(
        backend.config,
        credentials=type(backend.config.credentials)(
            {"app_key": "sandbox-app-key", "app_secret": "wrong-secret-value"}
        ),
    )
    backend.translator = type(good)(bad_config.credentials)
    with caplog.at_level(logging.DEBUG, logger="imgate.dispatch"):
        for _ in range(3):
            _, outcomes, _ = await gateway.send(text_request(["a"], "yunxin_v1"))
            assert outcomes[0].reason == pb.FAILURE_REASON_AUTH_FAILED
        backend.translator = good
        await gateway.send(text_request(["a"], "yunxin_v1"))
        backend.translator = type(good)(bad_config.credentials)
        await gateway.send(text_request(["a"], "yunxin_v1"))
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "credentials" in r.message
    ]
    assert len(warnings) == 2  # one per episode
    assert all("wrong-secret-value" not in r.getMessage() for r in caplog.records)


class TestYunxinV2RateCode:
    """The v2 API refuses for rate with 416: the backend pauses, the chunk is resent."""

    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        return SandboxConfig(
            seed=1,
            vendors={"yunxin_v2": YunxinV2Settings(call_limit=1, call_window_s=0.5, block_s=0.5)},
        )

    async def test_v2_rate_code_pauses_and_resends(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {"recipients_per_call": 2, "block_s": 0.6, "max_in_flight": 1, "max_attempts": 10}
        )
        ids = [f"u{n}" for n in range(6)]
        _, _outcomes, summary = await gateway.send(text_request(ids, "yunxin_v2"))
        assert summary.accepted == 6
        stats = sandbox.state.stats("yunxin_v2")
        assert stats.refusals.get("416", 0) >= 1
        assert stats.duplicate_deliveries == 0


@pytest.mark.parametrize("backend", VENDORS)
async def test_fails_over_to_the_backup_endpoint_when_the_primary_refuses(
    backend: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # Port 1 on loopback refuses connections: certainly not processed, so the chunk is
    # resent to the backup endpoint (the vendors' documented failover, vendors.md §3).
    gateway = await start_gateway(
        {"base_url": "http://127.0.0.1:1", "backup_base_url": sandbox.url}
    )
    _, outcomes, summary = await gateway.send(text_request(["a", "b"], backend))
    assert summary.accepted == 2
    assert all(o.attempts == 2 for o in outcomes)
    assert sandbox.state.stats(backend).calls_received == 1


async def test_connection_failures_are_explained_without_python_exception_names(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    sandbox.state.set_faults("tencent", [FaultRule(kind="drop", times=1)])
    _, outcomes, _ = await gateway.send(text_request(["a"], "tencent"))
    assert outcomes[0].state == pb.DELIVERY_STATE_UNCERTAIN
    assert "connection failed after the request was sent" in outcomes[0].detail
    assert "Error" not in outcomes[0].detail


async def _scripted_vendor(answer: dict[str, object]) -> tuple[web.AppRunner, str, list[str]]:
    """A 'vendor' that answers every call with `answer` (HTTP 200) and counts the calls."""
    seen: list[str] = []

    async def reply(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.path)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", reply)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


@pytest.mark.parametrize(
    ("backend", "answer"),
    [
        (
            "tencent",
            {
                "ActionStatus": "SomeError",
                "ErrorCode": 0,
                "MsgKey": "1_2_3",
                "ErrorList": [{"To_Account": "b", "ErrorCode": 60007}],
            },
        ),
        (
            "yunxin_v2",
            {
                "code": 200,
                "msg": "success",
                "data": {
                    "success_list": [{"receiver_id": "a", "message_server_id": 1}],
                    "failed_list": [{"account_id": "b", "error_code": 416, "error_msg": "freq"}],
                },
            },
        ),
    ],
)
async def test_a_recipient_refused_for_rate_is_uncertain_and_pauses_the_backend(
    backend: str, answer: dict[str, object], start_gateway: StartGateway
) -> None:
    """Fidelity 2 (issue 22): the vendors document their rate codes for a whole call only;
    one naming a single recipient says nothing certain about it. That recipient ends
    UNCERTAIN (it was FAILED / RATE_LIMITED, which invites a resend), nothing is resent,
    and the backend pauses as after a refused call (it did not)."""
    runner, url, seen = await _scripted_vendor(answer)
    try:
        gateway = await start_gateway({"base_url": url, "block_s": 30.0})
        _, outcomes, summary = await gateway.send(text_request(["a", "b"], backend))
        states = {o.recipient_id: (o.state, o.reason, o.attempts) for o in outcomes}
        assert states == {
            "a": (pb.DELIVERY_STATE_ACCEPTED, pb.FAILURE_REASON_UNSPECIFIED, 1),
            "b": (pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED, 1),
        }
        assert summary.vendor_calls == 1
        assert len(seen) == 1
        assert gateway.gateway.backends[backend].limiter.is_blocked()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("backend", ["yunxin_v1", "yunxin_v2"])
@pytest.mark.parametrize("code", [503, 514])
async def test_yunxin_busy_is_uncertain_and_later_calls_go_to_the_backup(
    backend: str, code: int, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    """Fidelity 4 (issue 22): Yunxin 503 "server busy" / 514 "service unavailable" come
    with no promise that the call was not processed (and the vendor's SDKs do not resend
    on them): the call is never resent, its recipients end UNCERTAIN (they were resent to
    the backup). The vendor said its primary is unavailable, so later calls use the
    backup endpoint."""
    runner, url, seen = await _scripted_vendor({"code": code, "desc": "busy", "msg": "busy"})
    try:
        gateway = await start_gateway({"base_url": url, "backup_base_url": sandbox.url})
        _, outcomes, summary = await gateway.send(text_request(["a", "b"], backend))
        assert [(o.state, o.attempts, o.vendor_code) for o in outcomes] == [
            (pb.DELIVERY_STATE_UNCERTAIN, 1, str(code))
        ] * 2
        assert summary.vendor_calls == 1
        assert len(seen) == 1
        assert sandbox.state.deliveries(backend) == []
        _, outcomes, _ = await gateway.send(text_request(["c"], backend))
        assert outcomes[0].state == pb.DELIVERY_STATE_ACCEPTED
        assert len(seen) == 1
    finally:
        await runner.cleanup()
