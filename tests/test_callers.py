"""Callers and transport security (CONTRACT.md §6 rules 17, 18): tokens, scoping, TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.api.callers import CallerInterceptor, RefusalLog, token_sha256
from imgate.config.access import check_exposure
from imgate.config.errors import ConfigError
from imgate.config.load import parse_config, sandbox_config
from imgate.config.model import CallerConfig, TLSConfig
from imgate.sandbox import SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate_client import AsyncGatewayClient
from tests._certs import TestCA
from tests.conftest import RunningGateway, StartGateway, text_request

BILLING_TOKEN = "billing-token-Zq8xJ3vT"
OPS_TOKEN = "ops-token-Lm4pW7cR"
CALLERS = (
    CallerConfig("billing", bytes.fromhex(token_sha256(BILLING_TOKEN)), backends=("tencent",)),
    CallerConfig("ops", bytes.fromhex(token_sha256(OPS_TOKEN))),
)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _submit(
    recipients: list[str], backend: str = "tencent", **fields: Any
) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest.FromString(
        text_request(recipients, backend, **fields).SerializeToString()
    )


async def _start(start_gateway: StartGateway, **top: Any) -> RunningGateway:
    return await start_gateway(callers=CALLERS, **top)


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    code: grpc.StatusCode = error.value.code()
    return code


async def test_missing_and_wrong_tokens_are_unauthenticated_and_send_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway)
    request = _submit(["alice"])
    for metadata in ((), _auth("not-a-token"), (("authorization", BILLING_TOKEN),)):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await gateway.stub.SubmitBatch(request, metadata=metadata, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert BILLING_TOKEN not in (error.value.details() or "")
        assert "not-a-token" not in (error.value.details() or "")
    # Streaming RPCs are refused the same way, before anything is stored.
    stream = gateway.stub.BatchSend(text_request(["bob"], "tencent"), timeout=10)
    assert await _code(stream.read()) == grpc.StatusCode.UNAUTHENTICATED
    assert sandbox.state.stats("tencent").calls_received == 0
    # The right token works; health needs none.
    batch = await gateway.stub.SubmitBatch(request, metadata=_auth(BILLING_TOKEN), timeout=10)
    assert batch.total == 1
    health = health_pb2_grpc.HealthStub(gateway.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_foreign_backend_is_permission_denied_and_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway)
    call = gateway.stub.SubmitBatch(
        _submit(["alice"], "yunxin_v2"), metadata=_auth(BILLING_TOKEN), timeout=10
    )
    assert await _code(call) == grpc.StatusCode.PERMISSION_DENIED
    stream = gateway.stub.BatchSend(
        text_request(["alice"], "yunxin_v1"), metadata=_auth(BILLING_TOKEN), timeout=10
    )
    assert await _code(stream.read()) == grpc.StatusCode.PERMISSION_DENIED
    assert sandbox.state.stats("yunxin_v2").calls_received == 0
    assert sandbox.state.stats("yunxin_v1").calls_received == 0
    listed = await gateway.stub.ListBackends(
        pb.ListBackendsRequest(), metadata=_auth(BILLING_TOKEN), timeout=10
    )
    assert [b.name for b in listed.backends] == ["tencent"]
    # ops may use all of them.
    messages = [
        m
        async for m in gateway.stub.BatchSend(
            text_request(["alice"], "yunxin_v2"), metadata=_auth(OPS_TOKEN), timeout=30
        )
    ]
    assert messages[-1].summary.accepted == 1


async def test_batches_and_request_ids_belong_to_their_caller(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway)
    request = _submit(["alice", "bob"], request_id="order-42")
    mine = await gateway.stub.SubmitBatch(request, metadata=_auth(BILLING_TOKEN), timeout=10)
    theirs = await gateway.stub.SubmitBatch(request, metadata=_auth(OPS_TOKEN), timeout=10)
    # One request_id, two callers: two batches.
    assert mine.batch_id != theirs.batch_id
    again = await gateway.stub.SubmitBatch(request, metadata=_auth(BILLING_TOKEN), timeout=10)
    assert again.batch_id == mine.batch_id
    other = _auth(OPS_TOKEN)
    stub = gateway.stub
    for call in (
        stub.GetBatch(pb.GetBatchRequest(batch_id=mine.batch_id), metadata=other, timeout=10),
        stub.CancelBatch(pb.CancelBatchRequest(batch_id=mine.batch_id), metadata=other, timeout=10),
        stub.WatchBatch(
            pb.WatchBatchRequest(batch_id=mine.batch_id), metadata=other, timeout=10
        ).read(),
    ):
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListBatches(pb.ListBatchesRequest(), metadata=other, timeout=10)
    assert [b.batch_id for b in listed.batches] == [theirs.batch_id]
    got = await stub.GetBatch(
        pb.GetBatchRequest(batch_id=mine.batch_id), metadata=_auth(BILLING_TOKEN), timeout=10
    )
    assert got.batch_id == mine.batch_id


async def test_tokens_never_reach_logs_and_the_audit_line_does(
    sandbox: SandboxServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await _start(start_gateway)
    await _code(gateway.stub.SubmitBatch(_submit(["a"]), metadata=_auth("guess"), timeout=10))
    messages = [
        m
        async for m in gateway.stub.BatchSend(
            text_request(["alice", "bob"], "tencent"), metadata=_auth(BILLING_TOKEN), timeout=30
        )
    ]
    batch_id = messages[0].batch_id
    await gateway.gateway.stop(grace_s=1)
    text = caplog.text
    for secret in (BILLING_TOKEN, OPS_TOKEN, "guess", token_sha256(BILLING_TOKEN)):
        assert secret not in text
    refusals = [r.getMessage() for r in caplog.records if r.name == "imgate.callers"]
    assert any("refused /imgate.v1.GatewayService/SubmitBatch from" in line for line in refusals)
    audit = [r.getMessage() for r in caplog.records if r.name == "imgate.audit"]
    assert any(
        f"caller=billing backend=tencent batch_id={batch_id} recipients=2" in line
        and "accepted=2" in line
        for line in audit
    ), audit
    assert "token" not in repr(CALLERS[0]).lower().replace("token_sha256", "")
    assert token_sha256(BILLING_TOKEN) not in repr(CALLERS[0])


def test_interceptor_matches_only_exact_bearer_tokens() -> None:
    interceptor = CallerInterceptor(CALLERS, RefusalLog())
    assert interceptor.identify(_auth(BILLING_TOKEN)) is CALLERS[0]
    assert interceptor.identify((("authorization", f"bearer {OPS_TOKEN}"),)) is CALLERS[1]
    for metadata in (
        None,
        (),
        _auth(""),
        _auth(BILLING_TOKEN + "x"),
        _auth(BILLING_TOKEN[:-1]),
        (("authorization", f"Basic {BILLING_TOKEN}"),),
        (("x-token", BILLING_TOKEN),),
    ):
        assert interceptor.identify(metadata) is None


_BACKEND = (
    '[backends.tx]\nvendor = "tencent"\nbase_url = "https://console.tim.qq.com"\n'
    'sdk_app_id = 1400000000\nsecret_key = "s"\nadmin_identifier = "administrator"\n'
)


def _parse(text: str) -> Any:
    import tomllib

    return parse_config(tomllib.loads(text + _BACKEND), {})


def test_callers_and_tls_parse_and_errors_name_the_key(tmp_path: Path) -> None:
    digest = token_sha256(BILLING_TOKEN)
    ca = TestCA(tmp_path, "parse")
    issued, other = ca.issue("gateway", server=True), ca.issue("other", server=True)
    pem, key = issued.cert_file, issued.key_file
    config = _parse(
        f'[callers.billing]\ntoken_sha256 = "{digest}"\nbackends = ["tx"]\nweight = 3\n'
        f'[tls]\ncert_file = "{pem}"\nkey_file = "{key}"\n'
    )
    assert config.callers == (CallerConfig("billing", bytes.fromhex(digest), ("tx",), 3),)
    assert config.tls == TLSConfig(str(pem), str(key))
    bad = {
        f'[callers.billing]\ntoken_sha256 = "{BILLING_TOKEN}"\n': "callers.billing.token_sha256",
        '[callers.billing]\nbackends = ["tx"]\n': "callers.billing.token_sha256",
        f'[callers.billing]\ntoken_sha256 = "{digest}"\nbackends = ["yx"]\n': (
            "callers.billing.backends"
        ),
        f'[callers.billing]\ntoken_sha256 = "{digest}"\nweight = 0\n': "callers.billing.weight",
        f'[callers.billing]\ntoken_sha256 = "{digest}"\ntoken = "x"\n': "callers.billing.token",
        f'[callers."a b"]\ntoken_sha256 = "{digest}"\n': "callers.a b",
        f'[callers.a]\ntoken_sha256 = "{digest}"\n[callers.b]\ntoken_sha256 = "{digest}"\n': (
            "callers.b.token_sha256"
        ),
        f'[tls]\ncert_file = "{pem}"\n': "tls.key_file",
        f'[tls]\ncert_file = "{pem}"\nkey_file = "{tmp_path}/missing.key"\n': "tls.key_file",
        # Rule 31: a key that is not the certificate's, or files of the wrong kind.
        f'[tls]\ncert_file = "{pem}"\nkey_file = "{other.key_file}"\n': "tls.key_file",
        f'[tls]\ncert_file = "{key}"\nkey_file = "{key}"\n': "tls.cert_file",
        f'[tls]\ncert_file = "{pem}"\nkey_file = "{key}"\nclient_ca_file = "{key}"\n': (
            "tls.client_ca_file"
        ),
        'allow_unauthenticated = "yes"\n': "allow_unauthenticated",
    }
    for text, wrong in bad.items():
        with pytest.raises(ConfigError) as error:
            _parse(text)
        assert error.value.key == wrong, text
        # A token pasted where its digest belongs is not echoed back.
        assert BILLING_TOKEN not in str(error.value)


def test_rule_18_no_unauthenticated_listener_beyond_loopback() -> None:
    base = sandbox_config("http://127.0.0.1:1", "0.0.0.0:50051")
    with pytest.raises(ConfigError) as error:
        check_exposure(base)
    assert error.value.key == "allow_unauthenticated"
    check_exposure(dataclasses.replace(base, allow_unauthenticated=True))
    check_exposure(dataclasses.replace(base, callers=CALLERS))
    for loopback in ("127.0.0.1:1", "[::1]:1", "localhost:1", "127.0.0.2:1"):
        check_exposure(dataclasses.replace(base, listen=loopback))


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "ours")


def _tls(ca: TestCA, client_ca: TestCA | None = None) -> TLSConfig:
    server = ca.issue("server", server=True)
    return TLSConfig(
        str(server.cert_file), str(server.key_file), str(client_ca.ca_file) if client_ca else ""
    )


def _credentials(ca_file: Path | None, cert: Any) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file else None,
        private_key=cert.key_file.read_bytes() if cert else None,
        certificate_chain=cert.cert_file.read_bytes() if cert else None,
    )


async def _health_over(
    target: str, ca_file: Path | None, cert: Any = None
) -> health_pb2.HealthCheckResponse:
    credentials = _credentials(ca_file, cert)
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply: health_pb2.HealthCheckResponse = await stub.Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return reply


async def test_tls_serves_clients_that_trust_the_ca(
    ca: TestCA, tmp_path: Path, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway, tls=_tls(ca))
    reply = await _health_over(gateway.target, ca.ca_file)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # A client that does not trust our CA refuses the server.
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _health_over(gateway.target, TestCA(tmp_path, "other").ca_file)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plaintext does not reach it either.
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.stub.ListBackends(
            pb.ListBackendsRequest(), metadata=_auth(OPS_TOKEN), timeout=5
        )


async def test_mtls_refuses_clients_without_a_certificate_of_the_client_ca(
    ca: TestCA, tmp_path: Path, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway, tls=_tls(ca, client_ca=ca))
    good = ca.issue("billing-client", server=False)
    reply = await _health_over(gateway.target, ca.ca_file, good)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    foreign = TestCA(tmp_path, "foreign").issue("intruder", server=False)
    for cert in (None, foreign):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _health_over(gateway.target, ca.ca_file, cert)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


async def _imgate(*args: str, token: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGATE_")}
    if token is not None:
        env["IMGATE_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imgate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_cli_and_python_clients_speak_mtls_with_a_token(
    ca: TestCA, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await _start(start_gateway, tls=_tls(ca, client_ca=ca))
    client = ca.issue("cli", server=False)
    tls = ("--ca-file", str(ca.ca_file), "--cert-file", str(client.cert_file))
    tls += ("--key-file", str(client.key_file))
    send = ("send", "--target", gateway.target, *tls, "--to", "bob", "--text", "hi")
    code, stdout, _ = await _imgate(*send, token=OPS_TOKEN)
    assert code == 0
    assert stdout.splitlines()[0] == "bob  ACCEPTED"
    code, _, stderr = await _imgate(*send, token="wrong")
    assert code != 0
    assert "UNAUTHENTICATED" in stderr
    assert "wrong" not in stderr.replace("UNAUTHENTICATED", "")
    code, stdout, _ = await _imgate("health", "--target", gateway.target, *tls)
    assert (code, stdout.strip()) == (0, "SERVING")
    code, _, _ = await _imgate("health", "--target", gateway.target, "--ca-file", str(ca.ca_file))
    assert code != 0  # no client certificate
    async with AsyncGatewayClient(
        gateway.target,
        token=BILLING_TOKEN,
        ca_file=str(ca.ca_file),
        cert_file=str(client.cert_file),
        key_file=str(client.key_file),
    ) as async_client:
        listed = await async_client.list_backends(timeout=10)
    assert [b.name for b in listed.backends] == ["tencent"]


def test_the_readme_production_example_parses(tmp_path: Path) -> None:
    import hashlib
    import tomllib

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("### Production: callers and TLS")[1].split("```toml")[1]
    raw = tomllib.loads(block.split("```")[0])
    # The example's /etc paths, made real here.
    ca, clients = TestCA(tmp_path, "readme"), TestCA(tmp_path, "clients")
    issued = ca.issue("gateway", server=True)
    files = {
        "cert_file": issued.cert_file,
        "key_file": issued.key_file,
        "client_ca_file": clients.ca_file,
    }
    for key in raw["tls"]:
        raw["tls"][key] = str(files[key])
    env = {
        "BILLING_TOKEN_SHA256": hashlib.sha256(b"billing").hexdigest(),
        "ALERTS_TOKEN_SHA256": hashlib.sha256(b"alerts").hexdigest(),
        "TENCENT_SECRET_KEY": "secret",
    }
    config = parse_config(raw, env)
    assert [(c.name, c.backends, c.weight) for c in config.callers] == [
        ("billing", ("tx",), 1),
        ("alerts", None, 4),
    ]
    assert config.tls is not None
    assert config.tls.client_ca_file
    check_exposure(config)  # 0.0.0.0 with callers: allowed


async def test_refused_calls_are_logged_a_line_a_while_with_counts(
    sandbox: SandboxServer, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 22: each refused unauthenticated RPC wrote a WARNING line: the log's volume
    # was in an attacker's hands. Now the first refusal is a line, the rest of the minute
    # are counted into one more.
    caplog.set_level(logging.DEBUG)
    gateway = await _start(start_gateway)
    for _ in range(50):
        code = await _code(gateway.stub.GetBatch(pb.GetBatchRequest(batch_id="x"), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    refusals = [r for r in caplog.records if r.name == "imgate.callers"]
    assert len(refusals) == 1  # the first; the others wait for the summary
    gateway.gateway.refusals.flush()
    summary = [r.getMessage() for r in caplog.records if r.name == "imgate.callers"][-1]
    assert "49 more" in summary
