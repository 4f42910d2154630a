"""HTTP/JSON has gRPC's callers, tokens and TLS (CONTRACT §6, rule 29)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from google.rpc import code_pb2

from imgate.api.callers import token_sha256
from imgate.config.model import CallerConfig, TLSConfig
from imgate.sandbox import SandboxServer
from tests._certs import TestCA
from tests.http.conftest import StartHttp

BILLING = "billing-http-token-7Hq2"
OPS = "ops-http-token-9Xw4"
CALLERS = (
    CallerConfig("billing", bytes.fromhex(token_sha256(BILLING)), backends=("tencent",)),
    CallerConfig("ops", bytes.fromhex(token_sha256(OPS))),
)
TEXT = {"text": {"text": "hi"}}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_missing_and_unknown_tokens_are_401_and_send_nothing(
    start_http: StartHttp, sandbox: SandboxServer
) -> None:
    http = await start_http(callers=CALLERS)
    body = {"backend": "tencent", "recipientIds": ["bob"], "message": TEXT}
    for headers in ({}, _bearer("wrong"), {"Authorization": BILLING}, {"Authorization": "Basic x"}):
        for method, path, payload in (
            ("POST", "/v1/batches", body),
            ("GET", "/v1/backends", None),
            ("GET", "/sandbox/deliveries", None),
        ):
            status, answer = await http.call(method, path, payload, headers=headers)
            assert status == 401, (path, headers)
            assert answer["code"] == code_pb2.UNAUTHENTICATED
            assert BILLING not in str(answer)
    async with http.session.get(http.url("/v1/backends")) as response:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert sandbox.state.stats("tencent").calls_received == 0
    # The document and the console need no token: the console asks for one.
    async with http.session.get(http.url("/v1/openapi.json")) as response:
        assert response.status == 200
    async with http.session.get(http.url("/")) as response:
        assert response.status == 200


async def test_callers_see_their_own_backends_and_batches(
    start_http: StartHttp, sandbox: SandboxServer
) -> None:
    http = await start_http(callers=CALLERS)
    status, backends = await http.call("GET", "/v1/backends", headers=_bearer(BILLING))
    assert status == 200
    assert [b["name"] for b in backends["backends"]] == ["tencent"]
    # A backend outside the caller's: 403, nothing sent.
    status, answer = await http.call(
        "POST",
        "/v1/batches",
        {"backend": "yunxin_v2", "senderId": "a", "recipientIds": ["bob"], "message": TEXT},
        headers=_bearer(BILLING),
    )
    assert (status, answer["code"]) == (403, code_pb2.PERMISSION_DENIED)
    assert sandbox.state.stats("yunxin_v2").calls_received == 0
    # Another caller's batch does not exist for it.
    status, batch = await http.call(
        "POST",
        "/v1/batches",
        {"backend": "tencent", "recipientIds": ["bob"], "message": TEXT},
        headers=_bearer(BILLING),
    )
    assert status == 200
    path = f"/v1/batches/{batch['batchId']}"
    assert (await http.call("GET", path, headers=_bearer(BILLING)))[0] == 200
    status, answer = await http.call("GET", path, headers=_bearer(OPS))
    assert (status, answer["code"]) == (404, code_pb2.NOT_FOUND)
    status, listed = await http.call("GET", "/v1/batches", headers=_bearer(OPS))
    assert (status, listed) == (200, {})


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "http")


def _client_context(ca: TestCA, cert: object = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_file), str(cert.key_file))  # type: ignore[attr-defined]
    return context


async def test_tls_and_mtls_as_on_the_grpc_port(start_http: StartHttp, ca: TestCA) -> None:
    server = ca.issue("server", server=True)
    tls = TLSConfig(str(server.cert_file), str(server.key_file), str(ca.ca_file))
    client = ca.issue("client", server=False)
    http = await start_http(
        callers=CALLERS,
        tls=tls,
        scheme="https",
        connector=aiohttp.TCPConnector(ssl=_client_context(ca, client)),
    )
    status, _ = await http.call("GET", "/v1/backends", headers=_bearer(OPS))
    assert status == 200
    port = http.grpc.gateway.http_port
    # No client certificate: the handshake fails. Plaintext: no answer either.
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"https://127.0.0.1:{port}/v1/backends", ssl=_client_context(ca))
        with pytest.raises(aiohttp.ClientError):
            await session.get(f"http://127.0.0.1:{port}/v1/backends")
