"""Public face: create_app, SandboxServer, serve_sandbox, config checks, adding a vendor."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from imgate.sandbox import (
    SANDBOX_TENCENT_SECRET_KEY,
    SANDBOX_YUNXIN_APP_SECRET,
    STATE_KEY,
    Emulator,
    FaultRule,
    ParsedCall,
    SandboxConfig,
    SandboxServer,
    TencentSettings,
    VendorError,
    VendorSettings,
    YunxinV1Settings,
    create_app,
    default_emulators,
    serve_sandbox,
)
from imgate.vendors.base.spec import (
    Capabilities,
    IdRule,
    IdUnit,
    RefusalStatuses,
    VendorLimits,
    VendorSpec,
)
from imgate.vendors.registry import VENDORS

from .helpers import Vendors, tx_doc, yunxin_auth, yx1_fields


def test_the_sandbox_serves_every_registered_vendor() -> None:
    assert default_emulators() == tuple(
        emulator
        for plugin in VENDORS
        for emulator in (plugin.emulator, plugin.recall_emulator)
        if emulator is not None
    )
    assert {e.api for e in default_emulators() if e.spec.recall is not None} == {"send", "recall"}
    sends = [e for e in default_emulators() if e.api == "send"]
    assert [e.spec.path for e in sends] == [p.spec.path for p in VENDORS]


async def test_create_app_runs_under_aiohttp_test_utils() -> None:
    app = create_app()
    async with TestClient(TestServer(app)) as client:
        headers = {**yunxin_auth(), "Content-Type": "application/x-www-form-urlencoded"}
        response = await client.post(
            "/nimserver/msg/sendBatchMsg.action", data=urlencode(yx1_fields()), headers=headers
        )
        assert (await response.json())["code"] == 200
    assert len(app[STATE_KEY].deliveries()) == 2


async def test_server_binds_port_zero_and_reports_its_url(session: aiohttp.ClientSession) -> None:
    async with SandboxServer("127.0.0.1", 0) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.vendor_url("tencent") == server.url + "/v4/openim/batchsendmsg"
        assert (await Vendors(server, session).tx(tx_doc()))["ActionStatus"] == "OK"
    with pytest.raises(aiohttp.ClientConnectionError):
        await Vendors(server, session).tx(tx_doc())


async def test_serve_sandbox_prints_address_and_credentials(
    session: aiohttp.ClientSession,
) -> None:
    out = _Sink()
    task = asyncio.create_task(serve_sandbox("127.0.0.1", 0, out=out))
    await asyncio.wait_for(out.written.wait(), timeout=5)
    banner = out.getvalue()
    url = banner.split(" on ", 1)[1].split()[0]
    assert url.startswith("http://127.0.0.1:")
    for expected in (
        "sandbox-app-key",
        SANDBOX_YUNXIN_APP_SECRET,
        "1400000000",
        SANDBOX_TENCENT_SECRET_KEY,
        "administrator",
        "/v4/openim/batchsendmsg",
        "ghost",
    ):
        assert expected in banner
    async with session.get(url + "/sandbox/info") as response:
        assert response.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class _Sink(io.StringIO):
    """Standard output stand-in that says when something was printed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


def test_config_names_unknown_vendors_and_wrong_settings() -> None:
    with pytest.raises(ValueError, match="acme"):
        create_app(SandboxConfig(vendors={"acme": YunxinV1Settings()}))
    with pytest.raises(TypeError, match="TencentSettings"):
        create_app(SandboxConfig(vendors={"tencent": YunxinV1Settings()}))


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="recipients_per_call"):
        TencentSettings(recipients_per_call=0)
    with pytest.raises(ValueError, match="call_window_s"):
        YunxinV1Settings(call_window_s=0)
    with pytest.raises(ValueError, match="call_limit"):
        YunxinV1Settings(call_limit=0)


# A fourth vendor: one emulator class (this would be its own module) + one registry entry.


# Echo answers refusals with HTTP 4xx/5xx, as RongCloud does: its spec says so, and the
# emulator base follows it without an edit.
ECHO = VendorSpec(
    vendor="echo",
    display_name="Echo",
    path="/echo/send",
    limits=VendorLimits(
        recipients_per_call=2,
        call_limit=2,
        call_window_s=60.0,
        recipient_limit=0,
        recipient_window_s=60.0,
        block_s=1.0,
        vendor_block_s=0.0,
    ),
    id_rule=IdRule(64, IdUnit.UTF8),
    credential_fields={"token": str},
    app_id_field="token",
    sandbox_credentials={"token": "echo-token"},
    sender_required=False,
    capabilities=Capabilities(
        reports_unknown_recipients=False,
        online_only=False,
        skip_moderation=False,
        read_receipt=False,
        custom_sub_type=False,
        message_ids=False,
    ),
    refusal_statuses=RefusalStatuses(default=400, by_code={401: 401, 500: 500, 429: 429}),
)


@dataclass(frozen=True, kw_only=True)
class EchoSettings(VendorSettings):
    credential_fields: ClassVar[tuple[str, ...]] = tuple(ECHO.credential_fields)
    token: str = ECHO.sandbox_credentials["token"]
    recipients_per_call: int = ECHO.limits.recipients_per_call
    call_limit: int | None = ECHO.limits.call_limit


class EchoEmulator(Emulator[EchoSettings, ParsedCall]):
    spec: ClassVar[VendorSpec] = ECHO
    settings_type: ClassVar[type[VendorSettings]] = EchoSettings
    rate_limit_code: ClassVar[int] = 429
    internal_error: ClassVar[tuple[int, str]] = (500, "oops")

    @classmethod
    def default_settings(cls) -> EchoSettings:
        return EchoSettings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        if request.headers.get("Token") != self.settings.token:
            raise VendorError(401, "bad token")

    def parse(self, request: web.Request, body: bytes) -> ParsedCall:
        recipients = tuple(body.decode().split(","))
        if len(recipients) > self.settings.recipients_per_call:
            raise VendorError(400, "too many")
        return ParsedCall("echo-sender", recipients, "text", "fp")

    def process(self, call: ParsedCall, call_id: int) -> dict[str, Any]:
        for recipient in call.unique_recipients():
            self.deliver(call, call_id, recipient, f"m{call_id}")
        return {"ok": True}

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"error": code, "message": message}


async def test_a_fourth_vendor_is_one_class_and_one_registry_line(
    session: aiohttp.ClientSession,
) -> None:
    config = SandboxConfig(
        vendors={"echo": EchoSettings(faults=(FaultRule(kind="error_500", times=1),))}
    )
    async with SandboxServer(
        config=config, emulators=(*default_emulators(), EchoEmulator)
    ) as server:
        url = server.vendor_url("echo")

        statuses: list[int] = []

        async def call(body: str, token: str = "echo-token") -> Any:
            async with session.post(url, data=body, headers={"Token": token}) as response:
                statuses.append(response.status)
                return await response.json()

        assert await call("a,b", token="nope") == {"error": 401, "message": "bad token"}
        assert await call("a,b,c") == {"error": 400, "message": "too many"}
        assert await call("a,b") == {"error": 500, "message": "oops"}  # fault, but delivered
        assert await call("a,a") == {"ok": True}
        assert (await call("b"))["error"] == 429  # rate: 2 accepted calls per 60 s
        assert statuses == [401, 400, 500, 200, 429]  # as the spec's refusal_statuses say
        assert [d.recipient for d in server.state.deliveries("echo")] == ["a", "b", "a"]
        assert server.state.stats("echo").duplicate_deliveries == 1
        async with session.get(server.url + "/sandbox/info") as response:
            info = await response.json()
        assert info["vendors"]["echo"]["credentials"] == {"token": "echo-token"}
