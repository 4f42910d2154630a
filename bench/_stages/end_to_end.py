"""Stages 1 and 3: the HTTP floor (vendor calls straight to the sandbox: client CPU per
recipient) and the gateway end to end against floors 1 + 2 (+ 3), in interleaved rounds;
and `--profile`: stage 3's batches again with py-spy sampling the gateway."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._floors import outcome_floor
from bench._procs import BenchError, Gateway, HttpClient, Sandbox
from bench._profile import Sampler, summarize
from bench._report import Row, Target
from bench._stages.common import BatchRun, Plan, progress, send_batch
from bench._workload import MAX_IN_FLIGHT, WARM_RECIPIENTS, batch_request

_US = 1e6


def _check_floor_run(sandbox: Sandbox, result: dict[str, Any]) -> None:
    """The floor's calls must all have been delivered, or its CPU means nothing."""
    stats = sandbox.stats(result["vendor"])
    if set(result["statuses"]) != {"200"} or stats["deliveries"] != result["recipients"]:
        raise BenchError(
            f"HTTP floor: statuses {result['statuses']}, sandbox delivered"
            f" {stats['deliveries']} of {result['recipients']}, refusals {stats['refusals']}"
        )


@dataclass
class _Round:
    floor: dict[str, Any]
    gateway: BatchRun
    gateway_sandbox_cpu_s: float


def _rounds(sandbox: Sandbox, gateway: Gateway, vendor: str, plan: Plan) -> list[_Round]:
    """Floor 1 and the gateway on the same recipients, interleaved A B B A A B ..."""
    recipients = plan.e2e_recipients
    request = batch_request(vendor, recipients)
    send_batch(gateway, batch_request(vendor, WARM_RECIPIENTS), 60)
    rounds = []
    with HttpClient(sandbox, vendor, MAX_IN_FLIGHT) as client:
        for number in range(plan.rounds):
            progress(f"stage 1+3: {vendor} round {number + 1}/{plan.rounds}")
            done: dict[str, Any] = {}
            order = ("floor", "gateway") if number % 2 == 0 else ("gateway", "floor")
            for side in order:
                sandbox.reset()
                if side == "floor":
                    done["floor"] = client.send(recipients)
                    _check_floor_run(sandbox, done["floor"])
                else:
                    sandbox_before = sandbox.cpu_s()
                    done["gateway"] = send_batch(gateway, request, 300)
                    done["sandbox"] = sandbox.cpu_s() - sandbox_before
            rounds.append(_Round(done["floor"], done["gateway"], done["sandbox"]))
    return rounds


def end_to_end(
    sandbox: Sandbox, gateway: Gateway, plan: Plan, stream_per_outcome: float
) -> list[Row]:
    """Stages 1 and 3 per vendor: floor 1 and the gateway in interleaved rounds."""
    rows: list[Row] = []
    recipients = plan.e2e_recipients
    total = recipients * plan.rounds
    for vendor in plan.e2e_vendors:
        rounds = _rounds(sandbox, gateway, vendor, plan)
        http_floor = sum(r.floor["cpu_s"] for r in rounds) / total
        floor_sandbox = sum(r.floor["sandbox_cpu_s"] for r in rounds) / total
        floor_rate = statistics.median(recipients / r.floor["wall_s"] for r in rounds)
        gateway_cpu = sum(r.gateway.gateway_cpu_s for r in rounds) / total
        gateway_sandbox = sum(r.gateway_sandbox_cpu_s for r in rounds) / total
        gateway_rate = statistics.median(recipients / r.gateway.wall_s for r in rounds)
        per_message = total / sum(r.gateway.outcome_messages for r in rounds)
        floor = http_floor + stream_per_outcome
        round_ratios = [
            r.gateway.gateway_cpu_s / (r.floor["cpu_s"] + stream_per_outcome * recipients)
            for r in rounds
        ]
        params = f"{recipients:,} recipients x {plan.rounds} rounds, {MAX_IN_FLIGHT} in flight"
        progress(f"stage 3: floor 3 ({vendor})")
        floor3 = outcome_floor(vendor, recipients, 5)
        rows.append(
            Row(
                1,
                f"HTTP floor ({vendor}): client CPU per recipient",
                params,
                f"{http_floor * _US:.2f} µs/rcpt; {floor_rate:,.0f} rcpt/s;"
                f" sandbox {floor_sandbox * _US:.1f} µs/rcpt",
                "-",
                None,
                data={
                    "cpu_per_recipient_s": http_floor,
                    "rounds": [
                        {k: v for k, v in r.floor.items() if k != "latencies_s"} for r in rounds
                    ],
                },
            )
        )
        rows.append(
            Row(
                3,
                f"end to end ({vendor}): gateway CPU per recipient ÷ floors 1+2",
                f"{params}; {per_message:,.0f} outcomes/message",
                f"{gateway_cpu * _US:.2f} µs/rcpt; {gateway_rate:,.0f} rcpt/s;"
                f" sandbox {gateway_sandbox * _US:.1f} µs/rcpt;"
                f" rounds {min(round_ratios):.1f}-{max(round_ratios):.1f}x",
                f"{http_floor * _US:.2f} + {stream_per_outcome * _US:.2f}"
                f" = {floor * _US:.2f} µs/rcpt",
                gateway_cpu / floor,
                Target("<=", 3, 6),
                data={
                    "floor3_cpu_per_recipient_s": floor3,
                    "gateway_cpu_per_recipient_s": gateway_cpu,
                    "http_floor_cpu_per_recipient_s": http_floor,
                    "stream_floor_cpu_per_outcome_s": stream_per_outcome,
                    "gateway_recipients_per_s": gateway_rate,
                    "floor_recipients_per_s": floor_rate,
                    "round_ratios": round_ratios,
                    "rounds": [
                        {
                            "wall_s": r.gateway.wall_s,
                            "gateway_cpu_s": r.gateway.gateway_cpu_s,
                            "outcome_messages": r.gateway.outcome_messages,
                            "vendor_calls": r.gateway.summary.vendor_calls,
                            "sandbox_cpu_s": r.gateway_sandbox_cpu_s,
                        }
                        for r in rounds
                    ],
                },
            )
        )
        rows.append(
            Row(
                3,
                f"end to end ({vendor}): gateway CPU per recipient ÷ floors 1+2+3",
                "floor 3: request ids listed and hashed, one outcome built per recipient"
                " (bench/_floors.py, best of 5)",
                f"{gateway_cpu * _US:.2f} µs/rcpt",
                f"{http_floor * _US:.2f} + {stream_per_outcome * _US:.2f} +"
                f" {floor3 * _US:.2f} = {(floor + floor3) * _US:.2f} µs/rcpt",
                gateway_cpu / (floor + floor3),
            )
        )
    return rows


# --- profile -------------------------------------------------------------------------------------


def profile(sandbox: Sandbox, gateway: Gateway, plan: Plan, out: Path) -> None:
    """Stage 3's batches again with py-spy sampling the gateway; the summary goes to `out`."""
    sections = []
    for vendor in plan.e2e_vendors:
        progress(f"profile: {vendor}, {plan.e2e_recipients:,} recipients")
        send_batch(gateway, batch_request(vendor, WARM_RECIPIENTS), 60)
        sandbox.reset()
        raw = out.with_name(f"{out.stem}-{vendor}.raw")
        with Sampler(gateway.pid, raw):
            run = send_batch(gateway, batch_request(vendor, plan.e2e_recipients), 300)
        sections.append(
            f"== {vendor}: {plan.e2e_recipients:,} recipients, gateway CPU"
            f" {run.gateway_cpu_s:.2f} s ({run.gateway_cpu_s / run.recipients * _US:.2f}"
            f" µs/rcpt while sampled), wall {run.wall_s:.2f} s\n\n{summarize(raw)}"
        )
    out.write_text("\n".join(sections))
