"""Callers share a backend's quota by weight (CONTRACT.md §6 rule 19), time scaled down."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from imgate.api.callers import token_sha256
from imgate.config.model import CallerConfig
from imgate.quota.limiter import BackendLimiter
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.tencent.emulator import TencentSettings
from tests.conftest import StartGateway, text_request

WINDOW_S = 1.0
RECIPIENTS_PER_WINDOW = 2000
# The slack for "one vendor call": the sandbox answers in milliseconds.
ONE_CALL_S = 0.5


async def _saturate(limiter: BackendLimiter, caller: str, weight: int, log: list[str]) -> None:
    while True:
        grant = await limiter.acquire(1, caller=caller, weight=weight)
        log.append(caller)
        grant.release()


async def test_callers_share_by_weight_and_batches_take_turns_within_one() -> None:
    limiter = BackendLimiter(20, 0.1, 0, 0)
    log: list[str] = []
    # Each caller runs 4 batches (one waiter each): heavy with weight 3, light with 1.
    tasks = [
        asyncio.create_task(_saturate(limiter, caller, weight, log))
        for caller, weight in (("heavy", 3), ("light", 1))
        for _ in range(4)
    ]
    await asyncio.sleep(1.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts = Counter(log[20:])  # after the first, uncontended window
    share = counts["heavy"] / (counts["heavy"] + counts["light"])
    assert 0.7 <= share <= 0.8, counts


async def test_an_idle_caller_is_next_however_much_another_has_queued() -> None:
    limiter = BackendLimiter(1, 0.05, 0, 0)
    order: list[str] = []

    async def call(caller: str) -> None:
        grant = await limiter.acquire(1, caller=caller)
        order.append(caller)
        grant.release()

    greedy = [asyncio.create_task(call("greedy")) for _ in range(10)]
    await asyncio.sleep(0.01)  # the first greedy call holds the window, 9 wait
    await call("small")
    assert order[:2] == ["greedy", "small"]
    await asyncio.gather(*greedy)


class TestAcrossCallers:
    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        return SandboxConfig(
            seed=1,
            vendors={
                "tencent": TencentSettings(
                    recipient_limit=RECIPIENTS_PER_WINDOW, recipient_window_s=WINDOW_S
                )
            },
        )

    async def test_one_recipient_waits_at_most_a_window_and_a_call_behind_100k(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        callers = (
            CallerConfig("bulk", bytes.fromhex(token_sha256("bulk-token"))),
            CallerConfig("alerts", bytes.fromhex(token_sha256("alerts-token"))),
        )
        gateway = await start_gateway(
            {"recipient_limit": RECIPIENTS_PER_WINDOW, "recipient_window_s": WINDOW_S},
            callers=callers,
        )
        bulk = (("authorization", "Bearer bulk-token"),)
        alerts = (("authorization", "Bearer alerts-token"),)
        # The greedy caller: a 100,000-recipient batch and a few more beside it, each
        # keeping a call waiting for the quota.
        sizes = [100_000] + [5_000] * 7
        batches = []
        for number, size in enumerate(sizes):
            request = text_request([f"b{number}-{n}" for n in range(size)], "tencent")
            submit = pb.SubmitBatchRequest.FromString(request.SerializeToString())
            batches.append(await gateway.stub.SubmitBatch(submit, metadata=bulk, timeout=60))
        await asyncio.sleep(1.5 * WINDOW_S)  # the bulk caller fills the quota
        started = time.monotonic()
        messages = [
            m
            async for m in gateway.stub.BatchSend(
                text_request(["oncall"], "tencent"), metadata=alerts, timeout=30
            )
        ]
        waited = time.monotonic() - started
        assert [o.state for m in messages for o in m.outcomes] == [pb.DELIVERY_STATE_ACCEPTED]
        assert waited <= WINDOW_S + ONE_CALL_S, f"{waited:.2f}s"
        progress = await gateway.stub.GetBatch(
            pb.GetBatchRequest(batch_id=batches[0].batch_id), metadata=bulk, timeout=10
        )
        assert progress.pending > 0  # the big batch was really still sending
        assert not sandbox.state.stats("tencent").refusals
        for batch in batches:
            await gateway.stub.CancelBatch(
                pb.CancelBatchRequest(batch_id=batch.batch_id), metadata=bulk, timeout=10
            )
