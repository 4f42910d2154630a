"""Stage 14, platform traffic: many callers, each sending one small BatchSend after another.

A platform's services send notifications of 1 or 10 recipients from many tasks at once.
The stage sends those through the gateway on the memory, SQLite and PostgreSQL stores,
and, in the same run and interleaved with them, the same vendor calls two other ways:

    direct    straight to the sandbox with aiohttp, one POST per request: built and
              signed by imgate's translator, the answer parsed by it (bench._platform_load)
    minimal   a grpc.aio gateway of the same proto that only builds, POSTs, parses and
              writes one message of outcomes + summary; no store (bench._mini_gateway)

at 1, 16, 64 and 256 concurrent callers (quick mode: 1 and 64), tencent, quotas off and
`max_in_flight` at the most callers, so neither the quota nor the in-flight cap binds.
Judged: gateway CPU per request (its process's /proc CPU time ÷ requests) ÷ the minimal
gateway's; the store's commits (and statements) per request at 1 caller, read from the
gateway's /metrics (`imgate_store_commits_total`, `imgate_store_statements_total`;
"n/a" while the gateway does not count them); then, with every vendor call delayed
50 ms by the sandbox and 64 callers, requests/s ÷ min(direct's, the quota's) and p50 ÷
direct's p50. Reported: each gateway's RSS after the stage, the SQLite WAL file's size.
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
from bench._stages import Plan, progress
from bench._workload import Backend

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
    """Quotas off on both sides; up to MOST_CALLERS vendor calls in flight."""
    return [Backend(VENDOR, max_in_flight=MOST_CALLERS)]


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
    counters: dict[str, float | None] = field(default_factory=dict)
    """Store counter deltas summed over runs; None when /metrics does not have them."""

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_per_request_s(self) -> float:
        return self.cpu_s / self.requests

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


def store_counters(port: int) -> dict[str, float | None]:
    """The store's counters on the gateway's /metrics (`counters_in`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return counters_in(response.read().decode())


def counters_in(text: str) -> dict[str, float | None]:
    """The store's commit and statement counters in Prometheus text, summed over their
    labels; None for a counter the text does not have (a gateway that does not count it)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float | None] = dict.fromkeys(_COUNTERS)
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
    schema = f"imgate_bench_{secrets.token_hex(6)}"
    backends = platform_backends()
    with contextlib.ExitStack() as stack:
        stack.callback(_drop_schema, url, schema)
        sandbox = Sandbox("sandbox-platform", backends)
        stack.callback(sandbox.stop)
        sandbox.wait_ready()
        stores = {"memory": "memory", "sqlite": "sqlite", "postgresql": with_schema(url, schema)}
        gateways: dict[str, Gateway] = {}
        for store, store_arg in stores.items():
            gateway = Gateway(
                f"gateway-platform-{store}", sandbox, backends, store=store_arg, metrics=True
            )
            stack.callback(gateway.stop)
            gateways[store] = gateway
        minimal = MinimalGateway("gateway-platform-minimal", sandbox)
        stack.callback(minimal.stop)
        for gateway in gateways.values():
            gateway.wait_ready()
        minimal.wait_ready()
        sides = [Side("direct", None), Side("minimal", minimal, minimal.target)]
        sides += [
            Side(store, gateway, gateway.target, gateway.metrics_port)
            for store, gateway in gateways.items()
        ]
        yield sandbox, sides, OUT / "gateway-platform-sqlite.db"


def platform_traffic(plan: Plan) -> list[Row]:
    """Stage 14 (see the module docstring)."""
    stage = QUICK_PLAN if plan.quick else FULL_PLAN
    rows: list[Row] = []
    with _processes() as (sandbox, sides, sqlite_db):
        load = LoadClient()
        try:
            progress("stage 14: warm-up")
            for side in sides:
                _fresh_sandbox(sandbox, 0.0)
                load.run(_order(side, sandbox, 1, 16, 100))
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
                f"stage 14: {LATENCY_S * 1000:.0f} ms vendor latency, {LATENCY_CALLERS} callers"
            )
            latency = _rounds(
                sides,
                sandbox,
                load,
                1,
                LATENCY_CALLERS,
                stage.latency_requests,
                stage.rounds,
                LATENCY_S,
            )
            rows += _latency_rows(latency, stage)
        finally:
            load.close()
        rows += _after_rows(sides, sqlite_db)
    return rows


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


def _latency_rows(tallies: dict[str, Tally], stage: PlatformPlan) -> list[Row]:
    """Each store's gateway against direct calls when every vendor call takes 50 ms."""
    direct, minimal = tallies["direct"], tallies["minimal"]
    quota = _quota_per_s(platform_backends()[0], 1)
    bound = min(direct.per_s, quota)
    quota_text = "quota off" if math.isinf(quota) else f"quota {quota:,.0f} req/s"
    params = (
        f"{_params(1, LATENCY_CALLERS, stage.latency_requests, stage.rounds)};"
        f" {LATENCY_S * 1000:.0f} ms sandbox latency"
    )
    label = f"{LATENCY_S * 1000:.0f} ms vendor, {LATENCY_CALLERS} callers"
    rows = [
        Row(
            14,
            f"platform ({label}): minimal gateway requests/s ÷ direct",
            params,
            f"minimal {minimal.summary()}",
            f"direct {direct.summary()}",
            minimal.per_s / bound,
            data={"minimal": minimal.data(), "direct": direct.data()},
        )
    ]
    for store in _STORES:
        tally = tallies[store]
        name = _STORE_NAMES[store]
        rows += [
            Row(
                14,
                f"platform ({name}, {label}): requests/s ÷ min(direct, quota)",
                params,
                f"{tally.per_s:,.0f} req/s",
                f"direct {direct.per_s:,.0f} req/s; {quota_text}",
                tally.per_s / bound,
                _RATE_TARGET,
                data={store: tally.data(), "direct": direct.data()},
            ),
            Row(
                14,
                f"platform ({name}, {label}): p50 latency ÷ direct p50",
                params,
                tally.latencies(),
                f"direct {direct.latencies()}",
                tally.quantile(0.5) / direct.quantile(0.5),
                _P50_TARGET,
            ),
        ]
    return rows


def _after_rows(sides: Sequence[Side], sqlite_db: Path) -> list[Row]:
    """What the stage left: each gateway's memory, the SQLite WAL file."""
    procs = {side.name: side.proc for side in sides if side.proc is not None}
    memory = {name: (proc.rss_mb(), proc.peak_rss_mb()) for name, proc in procs.items()}
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
            "platform: SQLite WAL file after the stage",
            f"{sqlite_db.name}-wal, the gateway still running",
            f"{wal_bytes / 2**20:.1f} MiB",
            "-",
            None,
            data={"wal_bytes": wal_bytes},
        ),
    ]
