"""Vendor calls never follow redirects (issue 22, item 1).

A vendor, a proxy in front of it, a captive portal or a hijacked name may answer a call
with a 3xx. Following it would send the call again (307/308 keep the body: every
recipient twice), hand the signed body and its credentials to another host, or turn the
POST into a body-less GET whose answer is then read as the vendor's. A 3xx is an answer
the gateway cannot account for: its recipients end UNCERTAIN and are never resent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from imgate.sandbox import SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import VENDORS, StartGateway, text_request


@dataclass
class Recorder:
    """A host that records every request it receives and answers 200 {}."""

    url: str = ""
    requests: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def other_host() -> AsyncIterator[Recorder]:
    recorder = Recorder()

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        recorder.requests.append((request.method, request.path_qs, body, dict(request.headers)))
        return web.json_response({"code": 200, "ActionStatus": "OK", "ErrorCode": 0})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner, recorder.url = await _serve(app)
    yield recorder
    await runner.cleanup()


async def _redirector(status: int, target: str) -> tuple[web.AppRunner, str, list[str]]:
    """A 'vendor' that answers every call with `status` to `target` + the same path."""
    seen: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        seen.append(request.method)
        await request.read()
        return web.Response(status=status, headers={"Location": target + request.path_qs})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner, url = await _serve(app)
    return runner, url, seen


@pytest.mark.parametrize("status", [302, 307, 308])
@pytest.mark.parametrize("target", ["vendor", "other"])
@pytest.mark.parametrize("backend", VENDORS)
async def test_a_redirect_is_never_followed_and_ends_uncertain(
    backend: str,
    target: str,
    status: int,
    sandbox: SandboxServer,
    other_host: Recorder,
    start_gateway: StartGateway,
) -> None:
    # "vendor": the redirect points at the real (emulated) vendor, as a proxy redirecting
    # to itself would: followed, the vendor receives the call and the recipients are
    # delivered, while the first host may have delivered them already.
    location = sandbox.url if target == "vendor" else other_host.url
    runner, url, seen = await _redirector(status, location)
    try:
        gateway = await start_gateway({"base_url": url, "backup_base_url": ""})
        recipients = [f"r{i}" for i in range(30)]
        _, outcomes, summary = await gateway.send(text_request(recipients, backend))
    finally:
        await runner.cleanup()
    assert seen == ["POST"]  # one call, never resent
    assert [o.state for o in outcomes] == [pb.DELIVERY_STATE_UNCERTAIN] * len(recipients)
    assert {o.vendor_code for o in outcomes} == {f"http_{status}"}
    assert "redirect" in outcomes[0].detail
    assert summary.vendor_calls == 1
    assert sandbox.state.deliveries(backend) == []  # nothing reached the vendor twice
    assert other_host.requests == []  # no credential or body left for another host
