"""What the stages share: the plan (how much each sends), progress lines, one batch run to
its summary, and the calls the sandbox logged."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from bench._procs import BenchError, Gateway, Sandbox
from bench._workload import VENDORS
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Plan:
    """How much each stage sends; quick mode shrinks it to run in about two minutes."""

    quick: bool
    e2e_vendors: tuple[str, ...]
    e2e_recipients: int
    rounds: int
    """Interleaved rounds of each CPU comparison."""
    stream_outcomes: int
    """Outcomes per floor-2 call (messages of MAX_OUTCOMES_PER_MESSAGE)."""
    stream_calls: int
    """Floor-2 calls per round, so that each CPU read is far above one clock tick."""
    single_outcomes: int
    """Stage 4: outcomes streamed one per message."""
    quota_windows: int
    ttfo_recipients: int
    ttfo_repeats: int
    round_trip_recipients: int
    """Stage 6's round trip: one direct call at a time, 500 recipients each."""
    sleep_out: tuple[tuple[str, int], ...]
    """Stage 7: (vendor, recipients) delivered by the loop and by imgate."""
    memory_sizes: tuple[int, int]
    list_sizes: tuple[int, ...]
    """Stage 13: audience sizes, smallest first (growth is judged first to last)."""


FULL = Plan(
    quick=False,
    e2e_vendors=VENDORS,
    e2e_recipients=100_000,
    rounds=10,
    stream_outcomes=100_000,
    stream_calls=3,
    single_outcomes=10_000,
    quota_windows=10,
    ttfo_recipients=100_000,
    ttfo_repeats=5,
    round_trip_recipients=100_000,
    sleep_out=(("yunxin_v1", 100_000), ("tencent", 100_000)),
    memory_sizes=(10_000, 100_000),
    list_sizes=(10_000, 100_000, 1_000_000),
)


QUICK = Plan(
    quick=True,
    e2e_vendors=("yunxin_v1", "tencent"),
    e2e_recipients=25_000,
    rounds=4,
    stream_outcomes=100_000,
    stream_calls=3,
    single_outcomes=5_000,
    quota_windows=4,
    ttfo_recipients=100_000,
    ttfo_repeats=3,
    round_trip_recipients=20_000,
    sleep_out=(("tencent", 25_000),),
    memory_sizes=(10_000, 100_000),
    list_sizes=(10_000, 100_000),
)


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BatchRun:
    """One BatchSend through a gateway, seen from its caller."""

    recipients: int
    wall_s: float
    first_outcome_s: float
    outcome_messages: int
    summary: pb.BatchSummary
    gateway_cpu_s: float
    started_unix: float = 0.0
    """Wall clock (Unix seconds) at the BatchSend call, to set against the sandbox's log."""
    ended_unix: float = 0.0
    """Wall clock at the summary."""


def send_batch(gateway: Gateway, request: pb.BatchSendRequest, timeout_s: float) -> BatchRun:
    """Run a batch to its summary; every recipient must end ACCEPTED."""
    stub = pb_grpc.GatewayServiceStub(gateway.channel)
    recipients = len(request.recipient_ids)
    first_outcome_s = 0.0
    outcomes = outcome_messages = 0
    summary: pb.BatchSummary | None = None
    cpu_before = gateway.cpu_s()
    started_unix = time.time()
    started = time.perf_counter()
    for message in stub.BatchSend(request, timeout=timeout_s, metadata=gateway.metadata):
        if message.outcomes:
            if not outcome_messages:
                first_outcome_s = time.perf_counter() - started
            outcome_messages += 1
            outcomes += len(message.outcomes)
        if message.HasField("summary"):
            summary = message.summary
    wall_s = time.perf_counter() - started
    ended_unix = started_unix + wall_s
    cpu_s = gateway.cpu_s() - cpu_before
    if summary is None or outcomes != recipients or summary.accepted != recipients:
        raise BenchError(
            f"{gateway.name}: {recipients} recipients on {request.backend} gave {outcomes}"
            f" outcomes, summary {summary}"
        )
    return BatchRun(
        recipients,
        wall_s,
        first_outcome_s,
        outcome_messages,
        summary,
        cpu_s,
        started_unix,
        ended_unix,
    )


def call_arrivals(sandbox: Sandbox, vendor: str) -> list[tuple[float, int]]:
    """(arrival, deliveries) per processed call: its first delivery's time (Unix s) and how
    many recipients it delivered, sorted by arrival."""
    first: dict[int, float] = {}
    delivered: dict[int, int] = {}
    after = 0
    while True:
        page = sandbox.control(
            "GET", f"/sandbox/deliveries?vendor={vendor}&after={after}&limit=10000"
        )
        if page["truncated"]:
            raise BenchError(f"{sandbox.name}: the sandbox's delivery log overflowed")
        if not page["deliveries"]:
            return sorted((first[call], delivered[call]) for call in first)
        for delivery in page["deliveries"]:
            call = delivery["call_id"]
            first[call] = min(first.get(call, delivery["time"]), delivery["time"])
            delivered[call] = delivered.get(call, 0) + 1
        after = page["next_after"]
