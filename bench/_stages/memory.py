"""Stages 8 and 13, the gateway's memory: its peak RSS after a small and a big batch (8), and
audiences of 10,000 to 1,000,000 through UploadRecipients + SubmitBatch + WatchBatch (13):
gateway and client peak RSS growth, upload rate, first outcome ÷ one vendor round trip."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from bench._procs import BenchError, Gateway, HttpClient, Sandbox
from bench._report import Row, Target
from bench._stages.common import Plan, progress, send_batch
from bench._stages.latency import LATENCY_S
from bench._workload import WARM_RECIPIENTS, Backend, batch_request

# --- stage 8: memory ---------------------------------------------------------------------------

_MEMORY_VENDOR = "tencent"


def memory(sandbox: Sandbox, backends: list[Backend], plan: Plan) -> Row:
    """Stage 8: peak RSS of a fresh gateway after one batch of each size."""
    small, big = plan.memory_sizes
    peaks: dict[int, float] = {}
    idle: dict[int, float] = {}
    for size in (small, big):
        progress(f"stage 8: memory, {size:,} recipients")
        with _started(Gateway(f"gateway-memory-{size}", sandbox, backends)) as gateway:
            idle[size] = gateway.peak_rss_mb()
            send_batch(gateway, batch_request(_MEMORY_VENDOR, size), 300)
            peaks[size] = gateway.peak_rss_mb()
    per_10k = (peaks[big] - peaks[small]) / ((big - small) / 10_000)
    return Row(
        8,
        "gateway peak RSS per 10,000 recipients",
        f"{_MEMORY_VENDOR}; fresh gateway per batch of {small:,} and {big:,}",
        f"{per_10k:.1f} MB per 10,000 recipients",
        f"peak {peaks[small]:.0f} MB vs {peaks[big]:.0f} MB (idle {idle[small]:.0f} MB)",
        None,
        data={"peak_rss_mb": peaks, "idle_rss_mb": idle, "mb_per_10k": per_10k},
    )


# --- stage 13: audiences through recipient lists ------------------------------------------------

_AUDIENCE_VENDOR = "tencent"
_MAX_GROWTH_MB = 30.0


def _list_client(gateway: Gateway, recipients: int) -> dict[str, Any]:
    """One `bench._list_client` run (its own process, so its RSS is its own)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._list_client",
            "--target",
            gateway.target,
            "--recipients",
            str(recipients),
            "--backend",
            _AUDIENCE_VENDOR,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"bench._list_client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["outcomes"] != recipients or result["accepted"] != recipients:
        raise BenchError(f"list batch of {recipients:,} went wrong: {result}")
    return result


def audience_memory(sandbox: Sandbox, backends: list[Backend], plan: Plan) -> list[Row]:
    """Stage 13: each size through a fresh SQLite-store gateway and a fresh client process,
    every vendor call delayed as in stage 6 (so the first outcome compares with a round
    trip)."""
    vendor = _AUDIENCE_VENDOR
    sizes = plan.list_sizes
    sandbox.reset()
    sandbox.set_faults(vendor, [{"kind": "latency", "delay_s": LATENCY_S}])
    gateway_peak: dict[int, float] = {}
    gateway_idle: dict[int, float] = {}
    runs: dict[int, dict[str, Any]] = {}
    try:
        with HttpClient(sandbox, vendor, 1) as client:
            round_trip = statistics.median(client.send(10_000)["latencies_s"])
        for size in sizes:
            progress(f"stage 13: memory, a list of {size:,} recipients")
            name = f"gateway-audience-{size}"
            with _started(Gateway(name, sandbox, backends, store="sqlite")) as gateway:
                _list_client(gateway, WARM_RECIPIENTS)
                gateway_idle[size] = gateway.peak_rss_mb()
                runs[size] = _list_client(gateway, size)
                gateway_peak[size] = gateway.peak_rss_mb()
    finally:
        sandbox.set_faults(vendor, [])
    small, big = sizes[0], sizes[-1]
    client_peak = {size: run["peak_rss_mb"] for size, run in runs.items()}
    gateway_growth = gateway_peak[big] - gateway_peak[small]
    client_growth = client_peak[big] - client_peak[small]
    span = f"{small:,} → {big:,} recipients; fresh processes per size; SQLite store"

    def peaks(values: dict[int, float]) -> str:
        return "peak " + " / ".join(f"{values[size]:.0f}" for size in sizes) + " MB"

    upload_rate = runs[big]["listed"] / runs[big]["upload_s"]
    first = runs[big]["first_outcome_s"]
    growth_target = Target("<=", _MAX_GROWTH_MB, 2 * _MAX_GROWTH_MB, " MB")
    return [
        Row(
            13,
            "gateway peak RSS growth, list path (upload + submit + watch)",
            span,
            f"+{gateway_growth:.1f} MB",
            f"{peaks(gateway_peak)} (idle {gateway_idle[small]:.0f} MB)",
            gateway_growth,
            growth_target,
            data={"peak_rss_mb": gateway_peak, "idle_rss_mb": gateway_idle},
        ),
        Row(
            13,
            "client peak RSS growth, imgate_client (ids generated, outcomes counted)",
            span,
            f"+{client_growth:.1f} MB",
            peaks(client_peak),
            client_growth,
            growth_target,
            data={"peak_rss_mb": client_peak},
        ),
        Row(
            13,
            "UploadRecipients throughput",
            f"{big:,} ids in pages of 10,000; SQLite unique index",
            f"{upload_rate:,.0f} ids/s",
            f"{runs[big]['upload_s']:.1f} s for {big:,}",
            None,
            data={"upload_s": {size: run["upload_s"] for size, run in runs.items()}},
        ),
        Row(
            13,
            "time to first outcome of a list batch ÷ one vendor round trip",
            f"{big:,} recipients (SubmitBatch to the first watched outcome); {vendor},"
            f" {LATENCY_S * 1000:.0f} ms sandbox latency",
            f"{first * 1000:.0f} ms",
            f"{round_trip * 1000:.1f} ms round trip",
            first / round_trip,
            Target("<=", 2, 4),
            data={
                "first_outcome_s": {size: run["first_outcome_s"] for size, run in runs.items()},
                "round_trip_s": round_trip,
                "runs": runs,
            },
        ),
    ]


@contextlib.contextmanager
def _started(gateway: Gateway) -> Iterator[Gateway]:
    """Wait until `gateway` serves; stop it on exit."""
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.stop()
