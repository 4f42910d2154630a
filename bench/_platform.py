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

import asyncio
import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench._procs import OUT, BenchError, Gateway, Proc, Sandbox, free_port, wait_until
from bench._report import Row, Target
from bench._stages.common import Plan, progress
from bench._workload import Backend, Quota

VENDOR = "tencent"
MOST_CALLERS = 256
LATENCY_S = 0.05
LATENCY_CALLERS = 64
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""The local trust-auth server; IMGATE_BENCH_POSTGRES_URL (or the tests'
IMGATE_TEST_POSTGRES_URL) overrides it."""

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
_COUNTERS = ("imgate_store_commits_total", "imgate_store_statements_total")
_IN_FLIGHT_LIMIT = "imgate_vendor_in_flight_limit"
_TRACKED = "imgate_tracked_entries"
TENCENT_QUOTA = Quota(
    call_limit=200,
    call_window_s=1.0,
    recipient_limit=12_000,
    recipient_window_s=60.0,
    block_s=60.0,
)
"""Tencent's published quota (imgate.vendors.tencent's default limits), configured in
the latency round's gateways only."""


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


def platform_backends() -> list[Backend]:
    """Quotas off on both sides; `max_in_flight` not set (the gateway derives it)."""
    return [Backend(VENDOR, max_in_flight=None)]


def latency_backends() -> list[Backend]:
    """The latency round's gateways: Tencent's published quota, `max_in_flight` derived
    (the sandbox stays on `platform_backends`: quotas off)."""
    return [Backend(VENDOR, TENCENT_QUOTA, max_in_flight=None)]


def postgres_url() -> str:
    return os.environ.get(
        "IMGATE_BENCH_POSTGRES_URL", os.environ.get("IMGATE_TEST_POSTGRES_URL", POSTGRES_URL)
    )


def with_schema(url: str, schema: str) -> str:
    """`url` with `?search_path=schema` (the store creates and uses the path's first)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def _postgres(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _drop_schema(url: str, schema: str) -> None:
    """Drop the stage's schema; a failure is told, not raised (the rows stand)."""
    try:
        asyncio.run(_postgres(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        progress(f"stage 14: could not drop PostgreSQL schema {schema}: {exc}")


class MinimalGateway(Proc):
    """`bench._mini_gateway` against `sandbox`."""

    def __init__(self, name: str, sandbox: Sandbox) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        args = ["--port", str(self.port), "--url", sandbox.url, "--vendor", VENDOR]
        args += ["--max-in-flight", str(MOST_CALLERS)]
        super().__init__(name, ["-m", "bench._mini_gateway", *args])

    def wait_ready(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            wait_until(
                self,
                lambda: grpc.channel_ready_future(channel).result(timeout=1) is None,
                "ready",
            )


class LoadClient:
    """`bench._platform_load`: each `run` is one closed-loop run of many callers."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "bench._platform_load", "--vendor", VENDOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # {"ready": true}

    def run(self, order: dict[str, Any]) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(order) + "\n")
        self.popen.stdin.flush()
        result = self._read()
        if result["failures"]:
            raise BenchError(
                f"stage 14: {result['failures']} of {result['requests']} requests failed"
                f" ({order}); first: {result['first_failure']}"
            )
        return result

    def _read(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise BenchError(f"bench._platform_load exited with {self.popen.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Side:
    """One way of sending: "direct", "minimal" or a store's gateway."""

    name: str
    proc: Proc | None
    """The process whose CPU is the side's (None: direct, no process between)."""
    target: str = ""
    """gRPC address (empty: direct)."""
    metrics_port: int = 0


@dataclass
class Tally:
    """One side's runs of one configuration, summed over rounds."""

    requests: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """The side's process (the load client's own for direct)."""
    sandbox_cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    ends_s: list[list[float]] = field(default_factory=list)
    """Each run's request end times from its start."""
    counters: dict[str, float | None] = field(default_factory=dict)
    """Store counter deltas summed over runs; None when /metrics does not have them."""

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_per_request_s(self) -> float:
        return self.cpu_s / self.requests

    def sustained_per_s(self, span: int) -> float:
        """`span` ÷ the mean time from each request's end to the `span`-th end after it,
        over every run: the steady rate, whatever a quota's first window or the run's
        ramp and tail do (requests ÷ wall time when no run has more than `span`)."""
        spans = [
            ordered[k + span] - ordered[k]
            for ordered in map(sorted, self.ends_s)
            for k in range(len(ordered) - span)
        ]
        return span * len(spans) / sum(spans) if spans else self.per_s

    def mean_s(self) -> float:
        """Mean latency: a closed loop's is callers ÷ requests/s (Little's law)."""
        return sum(self.latencies_s) / len(self.latencies_s)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def per_request(self, counter: str) -> float | None:
        value = self.counters.get(counter)
        return None if value is None else value / self.requests

    def latencies(self) -> str:
        return f"p50 {self.quantile(0.5) * 1000:.1f} ms, p99 {self.quantile(0.99) * 1000:.1f} ms"

    def summary(self) -> str:
        return f"{self.per_s:,.0f} req/s; {self.latencies()}"

    def data(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "sandbox_cpu_s": self.sandbox_cpu_s,
            "requests_per_s": self.per_s,
            "p50_s": self.quantile(0.5),
            "p99_s": self.quantile(0.99),
            "counters": self.counters,
        }


def store_counters(port: int, names: Sequence[str] = _COUNTERS) -> dict[str, float | None]:
    """`names` on the gateway's /metrics (`counters_in`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return counters_in(response.read().decode(), names)


def counters_in(text: str, names: Sequence[str] = _COUNTERS) -> dict[str, float | None]:
    """The samples called `names` (default: the store's commit and statement counters) in
    Prometheus text, summed over their labels; None for a name the text does not have (a
    gateway that does not count it)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float | None] = dict.fromkeys(names)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] = (found[sample.name] or 0.0) + sample.value
    return found


def _fresh_sandbox(sandbox: Sandbox, latency_s: float) -> None:
    """Clear the sandbox's log and counters (a reset clears faults too: set them again)."""
    sandbox.reset()
    if latency_s:
        sandbox.set_faults(VENDOR, [{"kind": "latency", "delay_s": latency_s}])


def _order(
    side: Side, sandbox: Sandbox, recipients: int, callers: int, requests: int
) -> dict[str, Any]:
    order: dict[str, Any] = {"recipients": recipients, "callers": callers, "requests": requests}
    if side.target:
        order.update(kind="grpc", target=side.target)
    else:
        order.update(kind="direct", url=sandbox.url)
    return order


def _measure(
    side: Side,
    sandbox: Sandbox,
    load: LoadClient,
    tally: Tally,
    recipients: int,
    callers: int,
    requests: int,
) -> None:
    """One run: an untimed burst of one request per caller first (the connection pools
    grow to `callers` outside the measurement), then `requests` timed."""
    load.run(_order(side, sandbox, recipients, callers, callers))
    # Scrapes stay outside the CPU window: serving /metrics is not the requests' cost.
    before = store_counters(side.metrics_port) if side.metrics_port else {}
    cpu_before = side.proc.cpu_s() if side.proc is not None else 0.0
    sandbox_before = sandbox.cpu_s()
    result = load.run(_order(side, sandbox, recipients, callers, requests))
    sandbox_cpu = sandbox.cpu_s() - sandbox_before
    cpu = side.proc.cpu_s() - cpu_before if side.proc is not None else result["cpu_s"]
    after = store_counters(side.metrics_port) if side.metrics_port else {}
    tally.requests += requests
    tally.wall_s += result["wall_s"]
    tally.cpu_s += cpu
    tally.sandbox_cpu_s += sandbox_cpu
    tally.latencies_s += result["latencies_s"]
    tally.ends_s.append(result["ends_s"])
    for counter in _COUNTERS:
        start, end = before.get(counter), after.get(counter)
        delta = None if start is None or end is None else end - start
        previous = tally.counters.get(counter, 0.0)
        tally.counters[counter] = None if delta is None or previous is None else previous + delta


def _rounds(
    sides: Sequence[Side],
    sandbox: Sandbox,
    load: LoadClient,
    recipients: int,
    callers: int,
    requests: int,
    rounds: int,
    latency_s: float = 0.0,
) -> dict[str, Tally]:
    """Every side once per round, the order turned around each round (A B C, C B A, ...)."""
    tallies = {side.name: Tally() for side in sides}
    for number in range(rounds):
        order = sides if number % 2 == 0 else list(reversed(sides))
        for side in order:
            _fresh_sandbox(sandbox, latency_s)
            _measure(side, sandbox, load, tallies[side.name], recipients, callers, requests)
    return tallies


def _store_args(url: str, schema: str) -> dict[str, str]:
    """Each store's `Gateway(store=...)`: a fresh SQLite file, a PostgreSQL schema."""
    return {"memory": "memory", "sqlite": "sqlite", "postgresql": with_schema(url, schema)}


@contextlib.contextmanager
def _gateway_sides(sandbox: Sandbox, backends: list[Backend], prefix: str) -> Iterator[list[Side]]:
    """A gateway per store on `backends`, named `prefix-STORE`, serving /metrics, ready;
    stopped (and its PostgreSQL schema dropped) on exit."""
    url = postgres_url()
    schema = f"imgate_bench_{secrets.token_hex(6)}"
    with contextlib.ExitStack() as stack:
        stack.callback(_drop_schema, url, schema)
        gateways: dict[str, Gateway] = {}
        for store, store_arg in _store_args(url, schema).items():
            gateway = Gateway(f"{prefix}-{store}", sandbox, backends, store=store_arg, metrics=True)
            stack.callback(gateway.stop)
            gateways[store] = gateway
        for gateway in gateways.values():
            gateway.wait_ready()
        yield [
            Side(store, gateway, gateway.target, gateway.metrics_port)
            for store, gateway in gateways.items()
        ]


@contextlib.contextmanager
def _processes() -> Iterator[tuple[Sandbox, list[Side], Path]]:
    """The sandbox, the sides (direct, minimal, a gateway per store) and the SQLite file;
    every process stopped and the PostgreSQL schema dropped on exit."""
    url = postgres_url()
    try:
        asyncio.run(_postgres(url, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"stage 14 needs PostgreSQL at {url} (IMGATE_BENCH_POSTGRES_URL): {exc}"
        ) from exc
    with contextlib.ExitStack() as stack:
        sandbox = Sandbox("sandbox-platform", platform_backends())
        stack.callback(sandbox.stop)
        sandbox.wait_ready()
        minimal = MinimalGateway("gateway-platform-minimal", sandbox)
        stack.callback(minimal.stop)
        stores = stack.enter_context(
            _gateway_sides(sandbox, platform_backends(), "gateway-platform")
        )
        minimal.wait_ready()
        sides = [Side("direct", None), Side("minimal", minimal, minimal.target), *stores]
        yield sandbox, sides, OUT / "gateway-platform-sqlite.db"


def _warm(sides: Sequence[Side], sandbox: Sandbox, load: LoadClient, latency_s: float) -> None:
    """100 untimed requests from 16 callers through each side."""
    for side in sides:
        _fresh_sandbox(sandbox, latency_s)
        load.run(_order(side, sandbox, 1, 16, 100))


def platform_traffic(plan: Plan) -> list[Row]:
    """Stage 14 (see the module docstring)."""
    stage = QUICK_PLAN if plan.quick else FULL_PLAN
    rows: list[Row] = []
    with _processes() as (sandbox, sides, sqlite_db):
        load = LoadClient()
        try:
            progress("stage 14: warm-up")
            _warm(sides, sandbox, load, 0.0)
            for recipients in stage.recipients:
                for callers in stage.callers:
                    progress(f"stage 14: {recipients} rcpt, {_callers(callers)}")
                    tallies = _rounds(
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
            with _gateway_sides(sandbox, backends, "gateway-platform-quota") as quota_sides:
                _warm(quota_sides, sandbox, load, LATENCY_S)
                latency = _rounds(
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
