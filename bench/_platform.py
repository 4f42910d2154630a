"""Stage 14, platform traffic: many callers, each sending one small BatchSend after another.

A platform's services send notifications of 1 or 10 recipients from many tasks at once.
The stage sends those through the gateway on the memory, SQLite and PostgreSQL stores,
and, in the same run and interleaved with them, the same vendor calls two other ways:

    direct    straight to the sandbox with aiohttp, one POST per request: built and
              signed by imgate's translator, the answer parsed by it (bench._platform_load)
    minimal   a grpc.aio gateway of the same proto that only builds, POSTs, parses and
              writes one message of outcomes + summary; no store (bench._mini_gateway)

at 1, 16, 64 and 256 concurrent callers (quick mode: 1 and 64), tencent, quotas off. No
gateway sets `max_in_flight`: each derives it (quotas off: the 256 ceiling).
Judged: gateway CPU per request (its process's /proc CPU time ÷ requests) ÷ the minimal
gateway's; the store's commits (and statements) per request at 1 caller, read from the
gateway's /metrics (`imgate_store_commits_total`, `imgate_store_statements_total`;
"n/a" while the gateway does not count them).

Then the latency round: every vendor call delayed 50 ms by the sandbox, 64 callers, 1
recipient, against three more gateways (one per store, started and stopped within the
round) configured with Tencent's published quota (200 calls / 1 s, 12,000 recipients /
60 s) while the sandbox and the direct client have quotas off. Judged: each gateway's
sustained requests/s ÷ min(direct's, the quota's), and its p50 ÷ the p50 a closed loop
of 64 callers must have at that bound (Little's law: max(direct's p50, callers ÷ bound)).
Reported: the minimal gateway (no quota) ÷ direct, each gateway's derived in-flight
limit, RSS and tracked entries after the stage, the SQLite WAL file's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench._platform_run import (
    MOST_CALLERS,
    TENCENT_QUOTA,
    VENDOR,
    LoadClient,
    Side,
    Tally,
    gateway_sides,
    latency_backends,
    processes,
    run_rounds,
    store_counters,
    warm,
)
from bench._report import Row, Target
from bench._stages.common import Plan, progress
from bench._workload import Backend

LATENCY_S = 0.05
LATENCY_CALLERS = 64

_US = 1e6
_STORES = ("memory", "sqlite", "postgresql")
_STORE_NAMES = {"memory": "memory", "sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Issue 20's targets; each gate is twice as far from parity as its target.
_CPU_TARGETS = {
    "memory": Target("<=", 1.5, 2.0),
    "sqlite": Target("<=", 2.0, 3.0),
    "postgresql": Target("<=", 2.5, 4.0),
}
_COMMITS_TARGET = Target("<=", 2, 4, unit="")
_RATE_TARGET = Target(">=", 0.9, 0.8)
_P50_TARGET = Target("<=", 1.3, 1.6)
_IN_FLIGHT_LIMIT = "imgate_vendor_in_flight_limit"
_TRACKED = "imgate_tracked_entries"


@dataclass(frozen=True)
class PlatformPlan:
    """How much stage 14 sends in each mode."""

    recipients: tuple[int, ...]
    callers: tuple[int, ...]
    requests: dict[int, int]
    """Requests per run, by callers (a run: one side, one configuration, one round)."""
    rounds: int
    """Interleaved rounds: every side runs once per round, in turned-around order."""
    latency_requests: int
    """Requests per run with 50 ms of vendor latency (64 callers, 1 recipient)."""


QUICK_PLAN = PlatformPlan(
    recipients=(1, 10),
    callers=(1, 64),
    requests={1: 150, 64: 512},
    rounds=1,
    latency_requests=512,
)
FULL_PLAN = PlatformPlan(
    recipients=(1, 10),
    callers=(1, 16, 64, MOST_CALLERS),
    # PostgreSQL serves ~150 requests/s here: 1,280 requests x 2 rounds x 2 sizes at 256
    # callers is ~35 s of the stage's ~3 min already.
    requests={1: 250, 16: 480, 64: 768, MOST_CALLERS: 1_280},
    rounds=2,
    latency_requests=1_024,
)


def platform_traffic(plan: Plan) -> list[Row]:
    """Stage 14 (see the module docstring)."""
    stage = QUICK_PLAN if plan.quick else FULL_PLAN
    rows: list[Row] = []
    with processes() as (sandbox, sides, sqlite_db):
        load = LoadClient()
        try:
            progress("stage 14: warm-up")
            warm(sides, sandbox, load, 0.0)
            for recipients in stage.recipients:
                for callers in stage.callers:
                    progress(f"stage 14: {recipients} rcpt, {_callers(callers)}")
                    tallies = run_rounds(
                        sides,
                        sandbox,
                        load,
                        recipients,
                        callers,
                        stage.requests[callers],
                        stage.rounds,
                    )
                    rows += _grid_rows(tallies, recipients, callers, stage)
            progress(
                f"stage 14: {LATENCY_S * 1000:.0f} ms vendor latency, {LATENCY_CALLERS} callers,"
                " gateways with Tencent's quota"
            )
            backends = latency_backends()
            with gateway_sides(sandbox, backends, "gateway-platform-quota") as quota_sides:
                warm(quota_sides, sandbox, load, LATENCY_S)
                latency = run_rounds(
                    [*sides[:2], *quota_sides],
                    sandbox,
                    load,
                    1,
                    LATENCY_CALLERS,
                    stage.latency_requests,
                    stage.rounds,
                    LATENCY_S,
                )
                limits = {side.name: _in_flight_limit(side) for side in quota_sides}
            rows += _latency_rows(latency, limits, stage)
        finally:
            load.close()
        rows += _after_rows(sides, sqlite_db)
    return rows


def _in_flight_limit(side: Side) -> float | None:
    """The gateway's `imgate_vendor_in_flight_limit` now (its derived max_in_flight)."""
    return store_counters(side.metrics_port, (_IN_FLIGHT_LIMIT,))[_IN_FLIGHT_LIMIT]


def _callers(count: int) -> str:
    return f"{count} caller{'' if count == 1 else 's'}"


def _params(recipients: int, callers: int, requests: int, rounds: int) -> str:
    return (
        f"{VENDOR}, {recipients} rcpt per BatchSend, {_callers(callers)};"
        f" {requests:,} requests x {rounds} rounds; quotas off"
    )


def _grid_rows(
    tallies: dict[str, Tally], recipients: int, callers: int, stage: PlatformPlan
) -> list[Row]:
    """The baselines' row, one CPU row per store, and at 1 caller the stores' counters."""
    direct, minimal = tallies["direct"], tallies["minimal"]
    params = _params(recipients, callers, stage.requests[callers], stage.rounds)
    config = f"{recipients} rcpt, {_callers(callers)}"
    rows = [
        Row(
            14,
            f"platform ({config}): minimal gateway; direct aiohttp",
            params,
            f"minimal {minimal.cpu_per_request_s * _US:,.0f} µs/req; {minimal.summary()}",
            f"direct {direct.summary()}; client {direct.cpu_per_request_s * _US:,.0f} µs/req",
            None,
            data={"minimal": minimal.data(), "direct": direct.data()},
        )
    ]
    for store in _STORES:
        tally = tallies[store]
        rows.append(
            Row(
                14,
                f"platform ({_STORE_NAMES[store]}, {config}): gateway CPU per request"
                " ÷ minimal gateway's",
                params,
                f"{tally.cpu_per_request_s * _US:,.0f} µs/req; {tally.summary()}",
                f"minimal {minimal.cpu_per_request_s * _US:,.0f} µs/req",
                tally.cpu_s / tally.requests / minimal.cpu_per_request_s,
                _CPU_TARGETS[store],
                data={store: tally.data(), "minimal": minimal.data()},
            )
        )
    if callers == 1:
        rows += [_counter_row("sqlite", tallies["sqlite"], config, params)]
        rows += [_counter_row("postgresql", tallies["postgresql"], config, params)]
    return rows


def _counter_row(store: str, tally: Tally, config: str, params: str) -> Row:
    """Commits (and statements) per request; SQLite's commits are judged, the rest told."""
    commits = tally.per_request("imgate_store_commits_total")
    statements = tally.per_request("imgate_store_statements_total")
    if commits is None:
        measured = "n/a: no imgate_store_commits_total on the gateway's /metrics"
    elif commits == 0 and statements:
        # Statements that write are committed, one way or another: a counter that stays
        # at 0 while they are counted is one the store does not keep.
        measured = "commits n/a (imgate_store_commits_total stays 0 while statements count)"
        commits = None
    else:
        measured = f"{commits:.2f} commits/req"
    if statements is not None:
        measured += f"; {statements:.1f} statements/req"
    judged = store == "sqlite"
    return Row(
        14,
        f"platform ({_STORE_NAMES[store]}, {config}): store commits"
        f"{'' if judged else ' and statements'} per request",
        params,
        measured,
        "-",
        commits if judged else None,
        _COMMITS_TARGET if judged else None,
        data={"commits_per_request": commits, "statements_per_request": statements},
    )


def _quota_per_s(backend: Backend, recipients: int) -> float:
    """Requests per second the backend's quota allows (quotas off: unbounded)."""
    quota = backend.quota
    if quota is None:
        return math.inf
    rate = quota.call_limit / quota.call_window_s
    if quota.recipient_limit:
        rate = min(rate, quota.recipient_limit / quota.recipient_window_s / recipients)
    return rate


def _latency_rows(
    tallies: dict[str, Tally], limits: dict[str, float | None], stage: PlatformPlan
) -> list[Row]:
    """Each store's quota-configured gateway against direct calls when every vendor call
    takes 50 ms: sustained requests/s ÷ min(direct's, the quota's); p50 ÷ the p50 a closed
    loop of LATENCY_CALLERS has at that rate (Little's law), or direct's if higher."""
    direct, minimal = tallies["direct"], tallies["minimal"]
    span = TENCENT_QUOTA.call_limit  # one quota window's calls
    direct_rate = direct.sustained_per_s(span)
    quota = _quota_per_s(latency_backends()[0], 1)
    bound = min(direct_rate, quota)
    direct_p50 = direct.quantile(0.5)
    queued_p50 = LATENCY_CALLERS / bound
    p50_floor = max(direct_p50, queued_p50)
    quota_text = (
        f"Tencent's quota {TENCENT_QUOTA.call_limit} calls / {TENCENT_QUOTA.call_window_s:g} s,"
        f" {TENCENT_QUOTA.recipient_limit:,} rcpt / {TENCENT_QUOTA.recipient_window_s:g} s"
    )
    params = (
        f"{VENDOR}, 1 rcpt per BatchSend, {_callers(LATENCY_CALLERS)};"
        f" {stage.latency_requests:,} requests x {stage.rounds} rounds;"
        f" {LATENCY_S * 1000:.0f} ms sandbox latency; gateways: {quota_text}, max_in_flight"
        " derived; sandbox, direct and minimal: quotas off"
    )
    label = f"{LATENCY_S * 1000:.0f} ms vendor, {LATENCY_CALLERS} callers"
    sustained = f"sustained = {span} ÷ mean time from each request's end to the {span}th after"
    minimal_rate = minimal.sustained_per_s(span)
    rows = [
        Row(
            14,
            f"platform ({label}): minimal gateway (no quota) requests/s ÷ direct",
            params,
            f"minimal {minimal_rate:,.0f} req/s sustained; {minimal.latencies()};"
            f" ÷ min(direct, quota) {minimal_rate / bound:.2f}",
            f"direct {direct_rate:,.0f} req/s sustained; {direct.latencies()}",
            minimal_rate / direct_rate,
            data={
                "minimal": minimal.data(),
                "direct": direct.data(),
                "sustained_span": span,
                "minimal_sustained_per_s": minimal_rate,
                "direct_sustained_per_s": direct_rate,
            },
        )
    ]
    for store in _STORES:
        tally = tallies[store]
        name = _STORE_NAMES[store]
        rate = tally.sustained_per_s(span)
        limit = limits.get(store)
        limit_text = "n/a" if limit is None else f"{limit:.0f}"
        p50 = tally.quantile(0.5)
        rows += [
            Row(
                14,
                f"platform ({name}, {label}, Tencent quota): requests/s ÷ min(direct, quota)",
                params,
                f"{rate:,.0f} req/s sustained ({tally.per_s:,.0f} over the runs' wall time);"
                f" in-flight limit {limit_text} (derived)",
                f"min(direct {direct_rate:,.0f}, quota {quota:,.0f}) = {bound:,.0f} req/s;"
                f" {sustained}",
                rate / bound,
                _RATE_TARGET,
                data={
                    store: tally.data(),
                    "direct": direct.data(),
                    "sustained_per_s": rate,
                    "direct_sustained_per_s": direct_rate,
                    "quota_per_s": quota,
                    "bound_per_s": bound,
                    "in_flight_limit": limit,
                },
            ),
            Row(
                14,
                f"platform ({name}, {label}, Tencent quota): p50 latency"
                " ÷ max(direct p50, callers ÷ bound)",
                params,
                f"{tally.latencies()}, mean {tally.mean_s() * 1000:.0f} ms;"
                f" ÷ direct p50 {p50 / direct_p50:.2f}x",
                f"max(direct p50 {direct_p50 * 1000:.1f} ms, {LATENCY_CALLERS} ÷"
                f" {bound:,.0f} req/s = {queued_p50 * 1000:.0f} ms) = {p50_floor * 1000:.0f} ms",
                p50 / p50_floor,
                _P50_TARGET,
                data={"p50_s": p50, "direct_p50_s": direct_p50, "floor_p50_s": p50_floor},
            ),
        ]
    return rows


def _after_rows(sides: Sequence[Side], sqlite_db: Path) -> list[Row]:
    """What the stage left: each gateway's memory and tracked entries, the SQLite WAL."""
    procs = {side.name: side.proc for side in sides if side.proc is not None}
    memory = {name: (proc.rss_mb(), proc.peak_rss_mb()) for name, proc in procs.items()}
    scraped = {
        side.name: store_counters(side.metrics_port, (_TRACKED, _IN_FLIGHT_LIMIT))
        for side in sides
        if side.metrics_port
    }
    wal = Path(f"{sqlite_db}-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    return [
        Row(
            14,
            "platform: gateway RSS after the stage (peak)",
            "every request of the stage sent; " + ", ".join(_STORE_NAMES[s] for s in _STORES),
            "; ".join(
                f"{_STORE_NAMES[store]} {memory[store][0]:.0f} MB ({memory[store][1]:.0f})"
                for store in _STORES
            ),
            f"minimal {memory['minimal'][0]:.0f} MB ({memory['minimal'][1]:.0f})",
            None,
            data={"rss_mb": memory},
        ),
        Row(
            14,
            "platform: tracked entries after the stage; in-flight limit",
            "imgate_tracked_entries summed over structures, imgate_vendor_in_flight_limit;"
            " the grid's gateways (quotas off), idle",
            "; ".join(
                f"{_STORE_NAMES[store]} {_number_or_na(scraped[store][_TRACKED])} entries,"
                f" limit {_number_or_na(scraped[store][_IN_FLIGHT_LIMIT])}"
                for store in _STORES
            ),
            "0 entries when nothing runs or is watched",
            None,
            data={"scraped": scraped},
        ),
        Row(
            14,
            "platform: SQLite WAL file after the stage",
            f"{sqlite_db.name}-wal, the gateway still running",
            f"{wal_bytes / 2**20:.1f} MiB",
            "-",
            None,
            data={"wal_bytes": wal_bytes},
        ),
    ]


def _number_or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"
