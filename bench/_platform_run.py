"""How stage 14 runs (bench/_platform.py judges): its processes (the sandbox, the minimal
gateway, a gateway per store, the load client), the sides it sends through, and its
measured runs, interleaved in rounds and summed per side in a Tally."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench._procs import (
    OUT,
    BenchError,
    Gateway,
    JsonLinesChild,
    Proc,
    Sandbox,
    free_port,
    wait_until,
)
from bench._stages.common import progress
from bench._workload import Backend, Quota

VENDOR = "tencent"
MOST_CALLERS = 256
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""The local trust-auth server; IMGATE_BENCH_POSTGRES_URL (or the tests'
IMGATE_TEST_POSTGRES_URL) overrides it."""

_COUNTERS = ("imgate_store_commits_total", "imgate_store_statements_total")
TENCENT_QUOTA = Quota(
    call_limit=200,
    call_window_s=1.0,
    recipient_limit=12_000,
    recipient_window_s=60.0,
    block_s=60.0,
)
"""Tencent's published quota (imgate.vendors.tencent's default limits), configured in
the latency round's gateways only."""


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


class LoadClient(JsonLinesChild):
    """`bench._platform_load`: each `run` is one closed-loop run of many callers."""

    def __init__(self) -> None:
        super().__init__("bench._platform_load", ["--vendor", VENDOR])

    def run(self, order: dict[str, Any]) -> dict[str, Any]:
        result = self.ask(order)
        if result["failures"]:
            raise BenchError(
                f"stage 14: {result['failures']} of {result['requests']} requests failed"
                f" ({order}); first: {result['first_failure']}"
            )
        return result


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


def run_rounds(
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
def gateway_sides(sandbox: Sandbox, backends: list[Backend], prefix: str) -> Iterator[list[Side]]:
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
def processes() -> Iterator[tuple[Sandbox, list[Side], Path]]:
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
            gateway_sides(sandbox, platform_backends(), "gateway-platform")
        )
        minimal.wait_ready()
        sides = [Side("direct", None), Side("minimal", minimal, minimal.target), *stores]
        yield sandbox, sides, OUT / "gateway-platform-sqlite.db"


def warm(sides: Sequence[Side], sandbox: Sandbox, load: LoadClient, latency_s: float) -> None:
    """100 untimed requests from 16 callers through each side."""
    for side in sides:
        _fresh_sandbox(sandbox, latency_s)
        load.run(_order(side, sandbox, 1, 16, 100))
