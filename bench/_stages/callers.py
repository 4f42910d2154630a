"""Stage 11, callers: gateway CPU per recipient with bearer-token callers ÷ without, and one
caller's single recipient behind another caller's 100,000 under a scaled quota (rule 19)."""

from __future__ import annotations

import time

from bench._procs import BenchError, Gateway, Sandbox
from bench._report import Row, Target
from bench._stages.common import Plan, progress, send_batch
from bench._stages.quotas import QUOTAS
from bench._workload import CALLER_TOKENS, WARM_RECIPIENTS, batch_request
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

_US = 1e6
_CALLERS_VENDOR = "tencent"


def _as(caller: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {CALLER_TOKENS[caller]}"),)


def callers(
    sandbox: Sandbox,
    open_gateway: Gateway,
    auth_gateway: Gateway,
    quota_sandbox: Sandbox,
    quota_gateway: Gateway,
    plan: Plan,
) -> list[Row]:
    """Stage 11: CPU per recipient with bearer-token callers ÷ without (interleaved
    rounds), and how long one caller's single recipient waits behind another caller's
    100,000-recipient batch under a scaled quota (rule 19)."""
    vendor = _CALLERS_VENDOR
    request = batch_request(vendor, plan.e2e_recipients)
    gateways = {"open": open_gateway, "auth": auth_gateway}
    cpu = {"open": 0.0, "auth": 0.0}
    send_batch(auth_gateway, batch_request(vendor, WARM_RECIPIENTS), 60)
    for number in range(plan.rounds):
        progress(f"stage 11: interceptor CPU round {number + 1}/{plan.rounds}")
        order = ("open", "auth") if number % 2 == 0 else ("auth", "open")
        for side in order:
            sandbox.reset()
            cpu[side] += send_batch(gateways[side], request, 300).gateway_cpu_s
    total = plan.e2e_recipients * plan.rounds
    quota, _ = QUOTAS[vendor]
    window_s = quota.recipient_window_s
    waits, idle = _fair_waits(quota_sandbox, quota_gateway, window_s, 1 if plan.quick else 3)
    worst = max(waits)
    return [
        Row(
            11,
            "gateway CPU per recipient, bearer-token callers ÷ none",
            f"{vendor}; {plan.e2e_recipients:,} recipients x {plan.rounds} rounds",
            f"callers {cpu['auth'] / total * _US:.2f} µs/rcpt",
            f"none {cpu['open'] / total * _US:.2f} µs/rcpt",
            cpu["auth"] / cpu["open"],
            # The interceptor costs ~1.3 µs per RPC, nothing per recipient; what the ratio
            # shows is the machine's noise: quick mode reads ~0.2 s of CPU per side in
            # 10 ms ticks and swung 0.95-1.22x over five runs (bench/RESULTS.md), so the
            # gate is 1.3 rather than the usual twice the target's distance (1.10).
            Target("<=", 1.05, 1.3),
            data={"cpu_s": cpu},
        ),
        Row(
            11,
            "one recipient behind another caller's 100,000: wait ÷ (window + one call)",
            f"{vendor}; {quota.recipient_limit:,} recipients / {window_s:g} s; the other"
            f" caller: 100,000 + 7 x 5,000 recipients; worst of {len(waits)}",
            f"{worst * 1000:.0f} ms",
            f"{window_s * 1000:.0f} ms + {idle * 1000:.0f} ms",
            worst / (window_s + idle),
            Target("<=", 1.0, 2.0),
            data={"waits_s": waits, "idle_call_s": idle, "window_s": window_s},
        ),
    ]


def _fair_waits(
    sandbox: Sandbox, gateway: Gateway, window_s: float, repeats: int
) -> tuple[list[float], float]:
    """(waits of the small caller's batch behind the bulk caller's, its idle time)."""
    stub = pb_grpc.GatewayServiceStub(gateway.channel)
    one = batch_request(_CALLERS_VENDOR, 1)

    def small_batch_s() -> float:
        started = time.perf_counter()
        messages = list(stub.BatchSend(one, timeout=60, metadata=_as("alerts")))
        if messages[-1].summary.accepted != 1:
            raise BenchError(f"stage 11: the small batch ended {messages[-1].summary}")
        return time.perf_counter() - started

    sandbox.reset()
    idle = min(small_batch_s() for _ in range(3))
    waits = []
    for number in range(repeats):
        progress(f"stage 11: fair share {number + 1}/{repeats}")
        time.sleep(window_s)  # a fresh window
        bulk = []
        for size in (100_000, *[5_000] * 7):
            submit = pb.SubmitBatchRequest.FromString(
                batch_request(_CALLERS_VENDOR, size).SerializeToString()
            )
            bulk.append(stub.SubmitBatch(submit, timeout=60, metadata=_as("bulk")).batch_id)
        time.sleep(1.5 * window_s)  # the bulk caller has the quota
        try:
            waits.append(small_batch_s())
        finally:
            for batch_id in bulk:
                stub.CancelBatch(
                    pb.CancelBatchRequest(batch_id=batch_id), timeout=60, metadata=_as("bulk")
                )
    if sandbox.stats(_CALLERS_VENDOR)["refusals"]:
        raise BenchError("stage 11: the sandbox refused calls for rate")
    return waits, idle
