"""Shared fixtures: the sandbox emulators and a real gateway on loopback port 0."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from imgate.api.server import Gateway
from imgate.config.load import GatewayConfig, sandbox_config
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.store.base import Store
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.registry import BY_VENDOR
from imgate.vendors.registry import VENDORS as PLUGINS

VENDORS = tuple(plugin.vendor for plugin in PLUGINS)
"""Every registered vendor: sandbox mode names one backend after each, so these are
backend names too. Shared suites parametrize over it; a new vendor joins them all."""


def spec_of(backend: str) -> VendorSpec:
    """The spec of a sandbox-mode backend (named after its vendor)."""
    return BY_VENDOR[backend].spec


@pytest.fixture
def sandbox_config_override() -> SandboxConfig:
    """Tests override this fixture to make the sandbox stricter or faulty."""
    return SandboxConfig(seed=1)


@pytest.fixture
async def sandbox(sandbox_config_override: SandboxConfig) -> AsyncIterator[SandboxServer]:
    async with SandboxServer(config=sandbox_config_override) as server:
        yield server


@dataclasses.dataclass
class RunningGateway:
    gateway: Gateway
    channel: grpc.aio.Channel
    stub: pb_grpc.GatewayServiceStub
    target: str

    async def send(
        self,
        request: pb.BatchSendRequest,
        timeout: float | None = 60,  # noqa: ASYNC109 - the gRPC deadline
    ) -> tuple[list[pb.BatchSendResponse], list[pb.RecipientOutcome], pb.BatchSummary]:
        """Run BatchSend to the end: (messages, outcomes, summary)."""
        messages = [m async for m in self.stub.BatchSend(request, timeout=timeout)]
        outcomes = [o for m in messages for o in m.outcomes]
        assert messages[-1].HasField("summary")
        assert all(not m.HasField("summary") for m in messages[:-1])
        return messages, outcomes, messages[-1].summary


StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(sandbox: SandboxServer) -> AsyncIterator[StartGateway]:
    """Start gateways against the sandbox; `backend_overrides` change every backend."""
    running: list[RunningGateway] = []

    async def start(
        backend_overrides: dict[str, Any] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        **top: Any,
    ) -> RunningGateway:
        config: GatewayConfig = sandbox_config(sandbox.url, "127.0.0.1:0")
        backends = tuple(
            dataclasses.replace(b, **(backend_overrides or {})) for b in config.backends
        )
        config = dataclasses.replace(config, backends=backends, **top)
        gateway = Gateway(config, store=store, clock=clock)
        port = await gateway.start()
        target = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(target)
        item = RunningGateway(gateway, channel, pb_grpc.GatewayServiceStub(channel), target)
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.gateway.stop(grace_s=1)


def text_request(
    recipients: list[str], backend: str, text: str = "hello", **fields: Any
) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        backend=backend,
        sender_id=fields.pop("sender_id", "imgate_sender"),
        recipient_ids=recipients,
        message=pb.Message(text=pb.TextContent(text=text)),
        **fields,
    )
