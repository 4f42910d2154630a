"""The `imgate` command as a process: sandbox mode, bad config, SIGTERM mid-batch."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import text_request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _imgate(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("IMGATE_CONFIG", None)
    # Each gateway its own state (SQLite store): never the developer's ~/.local/state.
    env["IMGATE_STATE_DIR"] = tempfile.mkdtemp(prefix="imgate-test-")
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "imgate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def _wait_serving(
    target: str, timeout_s: float = 20, process: subprocess.Popen[str] | None = None
) -> bool:
    """True once `target` serves; False as soon as `process` (the one that should serve
    it) has exited, rather than waiting out the deadline with its error unseen."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                return False
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"{target} never became SERVING")


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sandbox_mode_serves_and_says_so(stop_later: list[subprocess.Popen[str]]) -> None:
    target = f"127.0.0.1:{_free_port()}"
    sandbox = f"127.0.0.1:{_free_port()}"
    process = _imgate("serve", "--listen", target, "--sandbox-listen", sandbox)
    stop_later.append(process)
    _wait_serving(target)
    # The emulators listen on the address given (fixed and documented, not a random port).
    with socket.create_connection(("127.0.0.1", int(sandbox.rpartition(":")[2])), timeout=5):
        pass
    # The default backend (tencent) takes an empty sender: no --from needed.
    first = subprocess.run(
        [sys.executable, "-m", "imgate", "send", "--target", target, "--to", "bob", "--text", "hi"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "bob  ACCEPTED"
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        messages = list(stub.BatchSend(text_request(["a", "ghost1"], "yunxin_v2"), timeout=10))
    states = {o.recipient_id: o.state for m in messages for o in m.outcomes}
    assert states == {"a": pb.DELIVERY_STATE_ACCEPTED, "ghost1": pb.DELIVERY_STATE_FAILED}
    health = subprocess.run(
        [sys.executable, "-m", "imgate", "health", "--target", target],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert health.returncode == 0
    assert "SERVING" in health.stdout
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "SANDBOX MODE" in stderr


def test_bad_config_names_the_key_and_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[backends.tx]\nvendor = "tencent"\nbase_url = "https://console.tim.qq.com"\n'
        'sdk_app_id = 1400000000\nsecret_key = "${NOT_SET_ANYWHERE}"\n'
        'admin_identifier = "administrator"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "imgate", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "backends.tx.secret_key" in result.stderr
    assert "NOT_SET_ANYWHERE" in result.stderr


async def test_sigterm_mid_batch_closes_the_stream_with_every_outcome(
    sandbox: SandboxServer, tmp_path: Path, stop_later: list[subprocess.Popen[str]]
) -> None:
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.3)])
    config = tmp_path / "imgate.toml"
    config.write_text(
        f'shutdown_grace_s = 5\n[backends.tx]\nvendor = "tencent"\nbase_url = "{sandbox.url}"\n'
        'sdk_app_id = 1400000000\nsecret_key = "sandbox-secret-key"\n'
        'admin_identifier = "administrator"\nrecipients_per_call = 10\nmax_in_flight = 2\n'
    )
    target = f"127.0.0.1:{_free_port()}"
    process = _imgate("serve", "--config", str(config), "--listen", target)
    stop_later.append(process)
    await asyncio.to_thread(_wait_serving, target)
    recipients = [f"user{n}" for n in range(1000)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        outcomes: list[pb.RecipientOutcome] = []
        summary = None
        async for message in stub.BatchSend(text_request(recipients, "tx"), timeout=30):
            if message.outcomes and process.poll() is None and not outcomes:
                process.send_signal(signal.SIGTERM)
            outcomes.extend(message.outcomes)
            if message.HasField("summary"):
                summary = message.summary
    assert summary is not None
    assert sorted(o.recipient_id for o in outcomes) == sorted(recipients)
    not_attempted = [o for o in outcomes if o.reason == pb.FAILURE_REASON_NOT_ATTEMPTED]
    assert not_attempted  # the rest was never sent
    assert all(o.state == pb.DELIVERY_STATE_FAILED for o in not_attempted)
    delivered = {d.recipient for d in sandbox.state.deliveries("tencent")}
    accepted = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED}
    assert delivered == accepted
    await asyncio.to_thread(process.wait, 20)
    assert process.returncode == 0


async def test_configured_json_logs_and_metrics(
    sandbox: SandboxServer, stop_later: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    target = f"127.0.0.1:{_free_port()}"
    metrics_port = _free_port()
    config = tmp_path / "observed.toml"
    config.write_text(
        f'[backends.tx]\nvendor = "tencent"\nbase_url = "{sandbox.url}"\n'
        'sdk_app_id = 1400000000\nsecret_key = "sandbox-secret-key"\n'
        'admin_identifier = "administrator"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        '[log]\nformat = "json"\nlevel = "info"\n'
    )
    process = _imgate("serve", "--config", str(config), "--listen", target, "--store", "memory")
    stop_later.append(process)
    await asyncio.to_thread(_wait_serving, target)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        request = text_request(["a", "ghost1"], "tx", request_id="rid-json")
        [m async for m in stub.BatchSend(request, timeout=10)]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        text = await response.text()
    assert (
        'imgate_recipients_total{backend="tx",reason="RECIPIENT_NOT_FOUND",state="FAILED"} 1.0'
        in text
    )
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.to_thread(process.communicate, timeout=20)
    records = [json.loads(line) for line in stderr.splitlines()]
    # The batch's one INFO line (issue 20): its audit line when it ends.
    batch = next(r for r in records if r["message"].startswith("batch ended:"))
    assert (batch["backend"], batch["request_id"], batch["caller"]) == ("tx", "rid-json", "-")
    assert len(batch["batch_id"]) == 32
    assert "sandbox-secret-key" not in stderr


def _run_imgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "IMGATE_STATE_DIR": tempfile.mkdtemp(prefix="imgate-test-")}
    environment.pop("IMGATE_CONFIG", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "imgate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )


def test_rule_18_unauthenticated_beyond_loopback_fails_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text(
        f'listen = "0.0.0.0:{_free_port()}"\n[store]\nurl = "memory"\n'
        '[backends.tx]\nvendor = "tencent"\nbase_url = "https://console.tim.qq.com"\n'
        'sdk_app_id = 1400000000\nsecret_key = "s"\nadmin_identifier = "administrator"\n'
    )
    result = _run_imgate("serve", "--config", str(config))
    assert result.returncode == 2
    assert "allow_unauthenticated" in result.stderr
    assert "[callers" in result.stderr


def test_rule_20_sandbox_beyond_loopback_needs_the_flag() -> None:
    result = _run_imgate("serve", "--listen", f"0.0.0.0:{_free_port()}")
    assert result.returncode == 2
    assert "--sandbox" in result.stderr
    assert "SANDBOX MODE" not in result.stderr


def test_rule_20_a_missing_config_file_is_an_error_not_sandbox_mode(tmp_path: Path) -> None:
    missing = str(tmp_path / "imgate.tmol")
    by_env = _run_imgate("serve", env={"IMGATE_CONFIG": missing})
    by_flag = _run_imgate("serve", "--config", missing)
    for result, name in ((by_env, "IMGATE_CONFIG"), (by_flag, "--config")):
        assert result.returncode == 2
        assert name in result.stderr
        assert missing in result.stderr
        assert "SANDBOX MODE" not in result.stderr
    both = _run_imgate("serve", "--sandbox", env={"IMGATE_CONFIG": missing})
    assert both.returncode == 2


def test_explicit_sandbox_serves_beyond_loopback(stop_later: list[subprocess.Popen[str]]) -> None:
    port = _free_port()
    process = _imgate(
        "serve", "--sandbox", "--listen", f"0.0.0.0:{port}", "--sandbox-listen", "127.0.0.1:0"
    )
    stop_later.append(process)
    _wait_serving(f"127.0.0.1:{port}")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "SANDBOX MODE" in stderr


def test_token_commands_hash_what_the_gateway_compares() -> None:
    new = _run_imgate("token", "new")
    assert new.returncode == 0
    lines = dict(line.split(":", 1) for line in new.stdout.splitlines())
    token, digest = lines["token"].strip(), lines["token_sha256"].strip()
    assert len(token) >= 40
    hashed = subprocess.run(
        [sys.executable, "-m", "imgate", "token", "hash"],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert hashed.returncode == 0
    assert hashed.stdout.strip() == digest
    assert hashlib.sha256(token.encode()).hexdigest() == digest
