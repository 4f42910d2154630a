"""Stage 6: time to the first outcome of a big batch ÷ one vendor round trip, every vendor
call delayed by the sandbox (stages 9 and 13 reuse the delay and first_outcome_s)."""

from __future__ import annotations

import statistics
import time

from bench._floors import startup_floor
from bench._procs import BenchError, Gateway, HttpClient, Sandbox
from bench._report import Row, Target
from bench._stages.common import Plan, progress
from bench._workload import batch_request
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

LATENCY_S = 0.05
_LATENCY_VENDOR = "tencent"


def first_outcome_s(gateway: Gateway, request: pb.BatchSendRequest) -> float:
    """Seconds from the call to its first outcome; the call is then cancelled, and this
    returns once the cancelled batch has ended (the next measurement starts on an idle
    gateway: a fixed pause let one batch's closing overlap the next first outcome)."""
    stub = pb_grpc.GatewayServiceStub(gateway.channel)
    started = time.perf_counter()
    call = stub.BatchSend(request, timeout=60, metadata=gateway.metadata)
    first = None
    batch_id = ""
    try:
        for message in call:
            batch_id = batch_id or message.batch_id
            if message.outcomes:
                first = time.perf_counter() - started
                break
    finally:
        call.cancel()  # type: ignore[no-untyped-call]
    if first is None:
        raise BenchError(f"{gateway.name}: BatchSend ended without an outcome")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = stub.GetBatch(
            pb.GetBatchRequest(batch_id=batch_id), timeout=10, metadata=gateway.metadata
        )
        if batch.state in (pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED):
            return first
        time.sleep(0.02)
    raise BenchError(f"{gateway.name}: the cancelled batch {batch_id} did not end in 30 s")


def round_trip_s(sandbox: Sandbox, vendor: str, plan: Plan) -> tuple[float, int]:
    """Median latency of direct calls one at a time (the sandbox's faults as set), calls."""
    with HttpClient(sandbox, vendor, 1) as client:
        direct = client.send(plan.round_trip_recipients)
    return statistics.median(direct["latencies_s"]), int(direct["calls"])


def latency(sandbox: Sandbox, gateway: Gateway, plan: Plan) -> list[Row]:
    """Stage 6 with every sandbox call of the vendor delayed by 50 ms."""
    vendor = _LATENCY_VENDOR
    sandbox.reset()
    sandbox.set_faults(vendor, [{"kind": "latency", "delay_s": LATENCY_S}])
    try:
        progress(
            f"stage 6: round trip, {plan.round_trip_recipients:,} recipients one call at a time"
        )
        round_trip, calls = round_trip_s(sandbox, vendor, plan)
        progress(f"stage 6: first outcome, {plan.ttfo_recipients:,} recipients")
        request = batch_request(vendor, plan.ttfo_recipients)
        firsts = []
        for _ in range(plan.ttfo_repeats):
            firsts.append(first_outcome_s(gateway, request))
            time.sleep(0.2)  # the calls in flight at the cancel end with their answers
    finally:
        sandbox.set_faults(vendor, [])
    first = statistics.median(firsts)
    delay = f"{vendor}, {LATENCY_S * 1000:.0f} ms sandbox latency"
    progress("stage 6: start-up floor")
    startup = startup_floor(plan.ttfo_recipients, 7)
    return [
        Row(
            6,
            "time to first outcome ÷ (round trip + start-up floor)",
            f"{plan.ttfo_recipients:,} recipients; start-up floor: parse, list, hash, one"
            " scan, pages committed to SQLite (bench/_floors.py), median of 7",
            f"{first * 1000:.0f} ms",
            f"{round_trip * 1000:.1f} + {startup * 1000:.1f} ="
            f" {(round_trip + startup) * 1000:.1f} ms",
            first / (round_trip + startup),
            data={"startup_floor_s": startup},
        ),
        Row(
            6,
            "time to first outcome ÷ one vendor round trip",
            f"{plan.ttfo_recipients:,} recipients; {delay}; median of {plan.ttfo_repeats}",
            f"{first * 1000:.0f} ms (runs: {', '.join(f'{f * 1000:.0f}' for f in firsts)})",
            f"{round_trip * 1000:.1f} ms round trip (median of {calls} direct calls)",
            first / round_trip,
            Target("<=", 2, 4),
            data={"first_outcome_s": firsts, "round_trip_s": round_trip},
        ),
    ]
