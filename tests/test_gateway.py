"""End to end: a real gRPC server on port 0 against the sandbox emulators on port 0."""

from __future__ import annotations

import asyncio
import logging
import random

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

from imgate.observability.logs import TextFormatter, _ContextFilter
from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import VENDORS, StartGateway, spec_of, text_request


def _audience(size: int, ghosts: int, duplicates: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = [f"user{n:05d}" for n in range(size - ghosts)] + [f"ghost{n:04d}" for n in range(ghosts)]
    rng.shuffle(ids)
    for _ in range(duplicates):
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(ids))
    return ids


@pytest.mark.parametrize("backend", VENDORS)
async def test_five_thousand_recipients_one_outcome_each(
    backend: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    recipients = _audience(5000, ghosts=250, duplicates=400, seed=hash(backend) % 1000)
    messages, outcomes, summary = await gateway.send(text_request(recipients, backend))

    first_index: dict[str, int] = {}
    for position, recipient in enumerate(recipients):
        first_index.setdefault(recipient, position)
    assert len(outcomes) == len(first_index) == 5000
    assert {o.recipient_id: o.index for o in outcomes} == first_index
    accepted = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED}
    # Unknown accounts fail only where the vendor's answer names them.
    reports = spec_of(backend).capabilities.reports_unknown_recipients
    for outcome in outcomes:
        if outcome.recipient_id.startswith("ghost") and reports:
            assert outcome.state == pb.DELIVERY_STATE_FAILED
            assert outcome.reason == pb.FAILURE_REASON_RECIPIENT_NOT_FOUND
        else:
            assert outcome.state == pb.DELIVERY_STATE_ACCEPTED, outcome
        assert outcome.attempts == 1
    failed = 250 if reports else 0
    assert len(accepted) == 5000 - failed
    assert summary.total == 5000
    assert (summary.accepted, summary.failed, summary.uncertain) == (5000 - failed, failed, 0)
    assert summary.duplicates_removed == len(recipients) - 5000
    # Outcomes stream as calls finish, not all in one message at the end.
    assert len(messages) >= 3

    delivered = [d.recipient for d in sandbox.state.deliveries(backend)]
    # Same set (an unknown account gets nothing, reported or not), and nobody twice.
    assert sorted(delivered) == sorted(r for r in accepted if not r.startswith("ghost"))
    stats = sandbox.state.stats(backend)
    assert stats.duplicate_deliveries == 0
    assert not stats.refusals
    assert summary.vendor_calls == stats.calls_received


@pytest.mark.parametrize("backend", VENDORS)
async def test_vendor_message_ids_are_returned(backend: str, start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    request = text_request(["alice", "bob"], backend)
    request.options.return_message_ids = True
    _, outcomes, _ = await gateway.send(request)
    assert all(o.state == pb.DELIVERY_STATE_ACCEPTED for o in outcomes), outcomes
    if spec_of(backend).capabilities.message_ids:
        assert all(o.vendor_message_id for o in outcomes), outcomes


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields.extend(v.field for v in bad_request.field_violations)
    return fields


def _long(n: int) -> str:
    return "x" * n


INVALID = [
    ("empty recipients", text_request([], "yunxin_v1"), "recipient_ids"),
    ("unknown backend", text_request(["a"], "nope"), "backend"),
    ("no content", pb.BatchSendRequest(backend="tencent", recipient_ids=["a"]), "message"),
    ("yunxin without sender", text_request(["a"], "yunxin_v1", sender_id=""), "sender_id"),
    ("v2 without sender", text_request(["a"], "yunxin_v2", sender_id=""), "sender_id"),
    ("recipient too long", text_request(["a", _long(33)], "tencent"), "recipient_ids[1]"),
    ("empty recipient", text_request(["a", ""], "tencent"), "recipient_ids[1]"),
    ("sender too long", text_request(["a"], "tencent", sender_id=_long(33)), "sender_id"),
    ("yunxin text too long", text_request(["a"], "yunxin_v1", _long(5001)), "message.text"),
    ("v2 text too long", text_request(["a"], "yunxin_v2", _long(5001)), "message.text"),
    # Vendors count UTF-16 units (Java): an emoji is two.
    ("emoji text over 5000 units", text_request(["a"], "yunxin_v1", "😀" * 2501), "message.text"),
    ("emoji id over 32 units", text_request(["a", "😀" * 17], "yunxin_v2"), "recipient_ids[1]"),
    ("tencent body over 12 KB", text_request(["a"], "tencent", "测" * 4200), "message"),
    ("too many recipients", text_request([f"u{n}" for n in range(11)], "tencent"), "recipient_ids"),
]


@pytest.mark.parametrize(("case", "request_", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_requests_are_refused_and_nothing_is_sent(
    case: str,
    request_: pb.BatchSendRequest,
    field: str,
    sandbox: SandboxServer,
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(max_recipients_per_request=10)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = _violations(error.value)
    assert any(f.startswith(field) for f in fields), fields
    for vendor in VENDORS:
        assert sandbox.state.stats(vendor).calls_received == 0


@pytest.mark.parametrize(
    ("backend", "extension", "field"),
    [
        ("yunxin_v1", "[1, 2]", "message.extension"),
        ("tencent", "not json", "message.extension"),
        ("yunxin_v2", '{"k": "' + _long(1100) + '"}', "message.extension"),
    ],
)
async def test_bad_extension_is_refused(
    backend: str,
    extension: str,
    field: str,
    sandbox: SandboxServer,
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    request = text_request(["a"], backend)
    request.message.extension = extension
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in _violations(error.value)
    assert sandbox.state.stats(backend).calls_received == 0


async def test_tencent_empty_sender_means_admin(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    _, _outcomes, summary = await gateway.send(text_request(["a", "b"], "tencent", sender_id=""))
    assert summary.accepted == 2


async def test_list_backends(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    reply = await gateway.stub.ListBackends(pb.ListBackendsRequest())
    assert [b.name for b in reply.backends] == list(VENDORS)
    assert reply.default_backend in VENDORS
    for backend in reply.backends:
        assert backend.vendor == backend.name  # sandbox mode: one backend per vendor
        assert (
            backend.limits.recipients_per_call == spec_of(backend.name).limits.recipients_per_call
        )
    tencent = next(b for b in reply.backends if b.name == "tencent")
    assert tencent.sandbox
    assert tencent.limits.recipient_limit == 12000
    assert tencent.state == pb.BACKEND_STATE_SERVING


async def test_logs_carry_the_batch_and_never_secrets(
    sandbox: SandboxServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(_ContextFilter())
    caplog.set_level(logging.DEBUG)
    gateway = await start_gateway()
    for backend in VENDORS:
        sandbox.state.set_faults(backend, [FaultRule(kind="refuse_502", times=1)])
        await gateway.send(text_request(["a", "b"], backend, request_id=f"rid-{backend}"))
    formatter = TextFormatter()
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "backend=tencent request_id=rid-tencent" in text
    assert "/v4/openim/batchsendmsg" in text  # paths are logged ...
    for secret in ("sandbox-app-secret", "sandbox-secret-key", "usersig", "CheckSum"):
        assert secret not in text  # ... but never credentials or signed URLs


async def test_a_translator_bug_costs_only_its_chunk(
    sandbox: SandboxServer, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 1})
    translator = gateway.gateway.backends["tencent"].translator
    real_parse = translator.parse
    calls = 0

    def parse_failing_once(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("bug")
        return real_parse(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(translator, "parse", parse_failing_once)
    _, outcomes, summary = await gateway.send(text_request(_audience(30, 0, 0, 1), "tencent"))
    assert (summary.accepted, summary.uncertain, summary.failed) == (20, 10, 0)
    assert {o.reason for o in outcomes if o.state == pb.DELIVERY_STATE_UNCERTAIN} == {
        pb.FAILURE_REASON_VENDOR_ERROR
    }


async def test_health_and_reflection(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "imgate.v1.GatewayService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def services() -> list[str]:
        with grpc.insecure_channel(gateway.target) as channel:
            return list(ProtoReflectionDescriptorDatabase(channel).get_services())

    listed = await asyncio.to_thread(services)
    assert "imgate.v1.GatewayService" in listed
    assert "grpc.health.v1.Health" in listed
