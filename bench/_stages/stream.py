"""Stages 2 and 4: the stream floor, prebuilt outcome batches over grpc.aio (server CPU per
outcome), and outcome batching (CPU per outcome, one per message ÷ batched)."""

from __future__ import annotations

from bench._procs import BenchError, StreamServer
from bench._report import Row, Target
from bench._stages.common import Plan, progress
from imgate.api.messages import MAX_OUTCOMES_PER_MESSAGE
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

_US = 1e6


def _stream_cpu_s(server: StreamServer, outcomes: int, batch: int, calls: int) -> float:
    """Server CPU seconds for `calls` streams of `outcomes` in messages of `batch`."""
    stub = pb_grpc.GatewayServiceStub(server.channel)
    metadata = (("bench-outcomes", str(outcomes)), ("bench-batch", str(batch)))
    cpu_before = server.cpu_s()
    for _ in range(calls):
        received = sum(
            len(message.outcomes)
            for message in stub.BatchSend(pb.BatchSendRequest(), metadata=metadata, timeout=300)
        )
        if received != outcomes:
            raise BenchError(f"stream floor sent {received} outcomes, not {outcomes}")
    return server.cpu_s() - cpu_before


def stream_floor(server: StreamServer, plan: Plan) -> tuple[float, Row]:
    """Stage 2: server CPU per outcome streamed in the gateway's batch size."""
    progress("stage 2: stream floor")
    batch = MAX_OUTCOMES_PER_MESSAGE
    _stream_cpu_s(server, plan.stream_outcomes, batch, 1)  # builds the messages, untimed
    cpu = sum(
        _stream_cpu_s(server, plan.stream_outcomes, batch, plan.stream_calls)
        for _ in range(plan.rounds)
    )
    outcomes = plan.stream_outcomes * plan.stream_calls * plan.rounds
    per_outcome = cpu / outcomes
    row = Row(
        2,
        "stream floor: server CPU per outcome",
        f"{outcomes:,} outcomes in {plan.rounds} rounds, {batch:,}/message",
        f"{per_outcome * _US:.2f} µs/outcome",
        "-",
        None,
        data={"cpu_s": cpu, "outcomes": outcomes, "batch": batch},
    )
    return per_outcome, row


def batching(server: StreamServer, plan: Plan, batched_per_outcome: float) -> Row:
    """Stage 4: one outcome per message vs the batched floor of stage 2."""
    progress("stage 4: outcome batching")
    _stream_cpu_s(server, plan.single_outcomes, 1, 1)  # builds the messages, untimed
    cpu = sum(_stream_cpu_s(server, plan.single_outcomes, 1, 1) for _ in range(plan.rounds))
    single = cpu / (plan.single_outcomes * plan.rounds)
    return Row(
        4,
        "outcome batching: CPU/outcome, 1 per message ÷ batched",
        f"{plan.single_outcomes * plan.rounds:,} messages of 1 vs"
        f" {MAX_OUTCOMES_PER_MESSAGE:,}/message",
        f"{single * _US:.2f} µs/outcome",
        f"{batched_per_outcome * _US:.2f} µs/outcome",
        single / batched_per_outcome,
        Target(">=", 10, 5),
        data={"single_cpu_per_outcome_s": single, "batched_cpu_per_outcome_s": batched_per_outcome},
    )
