"""Sandbox mode with a time scale: gateway and emulators agree on the shorter windows."""

from __future__ import annotations

import time

import grpc

from imgate.api.server import Gateway
from imgate.config.load import sandbox_config
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import text_request


async def test_tencent_quota_in_scaled_time_is_paced_not_refused() -> None:
    # 30,000 recipients at 12,000 per minute: over two minutes unscaled, ~2 s at 60x.
    recipients = [f"user{i}" for i in range(30_000)]
    async with SandboxServer(config=SandboxConfig(seed=1, time_scale=60)) as sandbox:
        gateway = Gateway(sandbox_config(sandbox.url, "127.0.0.1:0", time_scale=60))
        port = await gateway.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.GatewayServiceStub(channel)
                started = time.monotonic()
                messages = [
                    m async for m in stub.BatchSend(text_request(recipients, "tencent"), timeout=60)
                ]
                elapsed = time.monotonic() - started
        finally:
            await gateway.stop(grace_s=1)
        stats = sandbox.state.stats("tencent")
    summary = messages[-1].summary
    assert (summary.total, summary.accepted) == (30_000, 30_000)
    # Paced by the gateway within the scaled window: the emulator never had to refuse.
    assert stats.refusals == {}
    assert stats.peak_recipients_in_window <= 12_000
    # Two full scaled windows must pass (the third batch waits for the first to leave).
    assert 1.9 <= elapsed < 30, elapsed
    assert all(o.state == pb.DELIVERY_STATE_ACCEPTED for m in messages for o in m.outcomes)
