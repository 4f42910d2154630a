"""Prometheus metrics of one gateway (CONTRACT.md §7 rule 21).

Every Gateway has its own CollectorRegistry: tests and the benchmark run several gateways
in one process, and a process-wide default registry would mix (or refuse) their series.
The counters are kept whether or not `[metrics] listen` is set (an increment is far
cheaper than the branch to skip it would be worth); `listen` only decides whether
`GET /metrics` is served.

Labels are bounded by configuration and by the API's enums only: backend and vendor names,
delivery states, failure reasons, dispositions, gRPC methods and codes. Never a recipient,
request id, batch id, caller token or anything a caller can choose freely.

What is live rather than counted (whether a backend is blocked, its quota use, its calls
in flight) is read from the backends when scraped, so the hot path pays nothing for it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imgate import __version__
from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import RecipientResult, not_accepted


class _Windows(Protocol):
    @property
    def blocked_until(self) -> float: ...

    def usage(self) -> list[tuple[str, int, int]]: ...


class _Permits(Protocol):
    @property
    def limit(self) -> int: ...


class Backend(Protocol):
    """What /metrics reads of a running backend (imgate.pipeline.backend.Backend): named
    here so that metrics, below the pipeline, import nothing of it."""

    @property
    def in_flight(self) -> int: ...

    @property
    def limiter(self) -> _Windows: ...

    @property
    def permits(self) -> _Permits: ...


log = logging.getLogger("imgate.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Vendor calls take from milliseconds (sandbox, same region) to the 10 s default timeout.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Quota waits run from nothing to a whole window (60 s) or a vendor block.
_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# gRPC calls: unary ones in milliseconds, streams of a whole batch for minutes.
_RPC_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)


def _names(enum: Any, prefix: str) -> dict[int, str]:
    return {number: name.removeprefix(prefix) for name, number in enum.items()}


STATE_NAMES = _names(pb.DeliveryState, "DELIVERY_STATE_")
REASON_NAMES = _names(pb.FailureReason, "FAILURE_REASON_")
BATCH_STATE_NAMES = _names(pb.BatchState, "BATCH_STATE_")
_ACCEPTED = STATE_NAMES[pb.DELIVERY_STATE_ACCEPTED]
_NO_REASON = REASON_NAMES[pb.FAILURE_REASON_UNSPECIFIED]


class Metrics:
    """The gateway's instruments; the dispatcher, sink, servicer and interceptor call the
    small methods below (one line at each place that has something to count)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.recipients = Counter(
            "imgate_recipients",
            "Recipients given an outcome, by final state and failure reason.",
            ["backend", "state", "reason"],
            registry=r,
        )
        self.vendor_requests = Counter(
            "imgate_vendor_requests",
            "Vendor HTTP calls, by how the answer was classified (done, retry, rate_limited,"
            " refresh_auth, ambiguous).",
            ["backend", "vendor", "result"],
            registry=r,
        )
        self.vendor_duration = Histogram(
            "imgate_vendor_request_duration_seconds",
            "Time from sending a vendor call to its classified answer.",
            ["backend", "vendor"],
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.quota_wait = Histogram(
            "imgate_quota_wait_seconds",
            "Time a chunk waited for the backend's quota (windows and vendor blocks).",
            ["backend"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.quota_wait_too_long = Counter(
            "imgate_quota_wait_too_long",
            "Chunks not sent because the quota would not allow them before send_before.",
            ["backend"],
            registry=r,
        )
        self.blocks = Counter(
            "imgate_backend_blocks",
            "Vendor rate-limit refusals that paused a backend.",
            ["backend"],
            registry=r,
        )
        self.batches_started = Counter(
            "imgate_batches_started",
            "Batch runs started in this process (new, resumed or closed after a restart).",
            ["backend"],
            registry=r,
        )
        self.batches_ended = Counter(
            "imgate_batches_ended",
            "Batches ended in this process, by final state.",
            ["backend", "state"],
            registry=r,
        )
        self.batch_errors = Counter(
            "imgate_batch_errors",
            "Batch runs stopped by an unexpected error (a store failure, most likely).",
            ["backend"],
            registry=r,
        )
        self.store_errors = Counter(
            "imgate_store_errors",
            "Store operations that failed, by what the gateway was doing.",
            ["operation"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "imgate_webhook_deliveries",
            "Webhook delivery attempts, by result (delivered: a 2xx answer; rejected: any"
            " other answer, redirects included; timeout; error: no answer), and events given"
            " up after retry_for_s (expired).",
            ["result"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "imgate_webhook_pending",
            "Webhook events in the store's outbox, not yet delivered nor given up (every"
            " endpoint's, every replica's).",
            registry=r,
        )
        self.watch_streams = Gauge(
            "imgate_watch_streams",
            "Open outcome streams (BatchSend and WatchBatch).",
            registry=r,
        )
        # Which version answers a scrape: a rollout shows as two series side by side.
        Gauge(
            "imgate_build_info", "1, labelled with the gateway's version.", ["version"], registry=r
        ).labels(__version__).set(1)
        self.grpc = GrpcMetrics(r)
        self._running: dict[str, int] = {}
        self._backends: Mapping[str, Backend] = {}
        self._quota_reachable: Callable[[], bool | None] | None = None
        self._store_stats: Callable[[], tuple[int, int]] | None = None
        self._tracked: Callable[[], Mapping[str, int]] | None = None
        r.register(_LiveCollector(self))

    def watch(
        self,
        backends: Mapping[str, Backend],
        quota_reachable: Callable[[], bool | None] | None = None,
    ) -> None:
        """Report these backends' live state (blocked, quota use, calls in flight) and,
        with `[quota] url`, whether the shared quota's Redis answered last time."""
        self._backends = backends
        self._quota_reachable = quota_reachable

    def watch_process(
        self,
        store_stats: Callable[[], tuple[int, int]],
        tracked: Callable[[], Mapping[str, int]],
    ) -> None:
        """Report the store's (commits, statements) and the sizes of what the process
        holds per batch, stream or caller (each should return to 0 when idle: issue 20)."""
        self._store_stats = store_stats
        self._tracked = tracked

    # -- one-line calls from the rest of the gateway -------------------------------------

    def vendor_call(self, backend: str, vendor: str, result: str, seconds: float) -> None:
        self.vendor_requests.labels(backend, vendor, result).inc()
        self.vendor_duration.labels(backend, vendor).observe(seconds)

    def quota_waited(self, backend: str, seconds: float, too_long: bool) -> None:
        self.quota_wait.labels(backend).observe(seconds)
        if too_long:
            self.quota_wait_too_long.labels(backend).inc()

    def recipients_same(self, backend: str, state: int, reason: int, count: int) -> None:
        """`count` recipients ended with one state and reason."""
        self.recipients.labels(backend, STATE_NAMES[state], REASON_NAMES[reason]).inc(count)

    def recipients_results(
        self, backend: str, results: Sequence[RecipientResult], accepted: int
    ) -> None:
        """A vendor's per-recipient answer; the all-accepted case costs one increment."""
        if accepted:
            self.recipients.labels(backend, _ACCEPTED, _NO_REASON).inc(accepted)
        if accepted == len(results):
            return
        tally = Tally(
            (
                pb.DELIVERY_STATE_UNCERTAIN if item.uncertain else pb.DELIVERY_STATE_FAILED,
                item.reason,
            )
            for item in not_accepted(results)
        )
        for (state, reason), count in tally.items():
            self.recipients_same(backend, state, reason, count)

    def batch_started(self, backend: str) -> None:
        self.batches_started.labels(backend).inc()
        self._running[backend] = self._running.get(backend, 0) + 1

    def batch_finished(self, backend: str, state: int | None) -> None:
        """A run left this process; `state` is how the batch ended (None: still open,
        to be resumed by a later start or another replica)."""
        self._running[backend] -= 1
        if state is not None:
            self.batches_ended.labels(backend, BATCH_STATE_NAMES[state]).inc()

    # -- serving --------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class GrpcMetrics:
    """The grpc-ecosystem (go-grpc-prometheus) server metrics, by their names there, with
    one more label: `transport`, "grpc" or "http" (the same RPC served as HTTP/JSON)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method", "transport"]
        self.started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            labels,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            labels,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            labels,
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level"
            " handled by the server.",
            labels,
            buckets=_RPC_BUCKETS,
            registry=registry,
        )


class _LiveCollector(Collector):
    """Per-backend state read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        backends = self._metrics._backends
        blocked = GaugeMetricFamily(
            "imgate_backend_blocked",
            "1 while the backend is paused after a vendor rate-limit refusal.",
            labels=["backend"],
        )
        blocked_for = GaugeMetricFamily(
            "imgate_backend_blocked_seconds",
            "Seconds left of the backend's current pause (0 when serving).",
            labels=["backend"],
        )
        in_flight = GaugeMetricFamily(
            "imgate_vendor_in_flight", "Vendor calls in flight.", labels=["backend"]
        )
        in_flight_limit = GaugeMetricFamily(
            "imgate_vendor_in_flight_limit",
            "Calls the backend may have in flight now (max_in_flight, or derived).",
            labels=["backend"],
        )
        quota_used = GaugeMetricFamily(
            "imgate_quota_used",
            "Quota held in the current window (calls or recipients, in flight included).",
            labels=["backend", "window"],
        )
        quota_limit = GaugeMetricFamily(
            "imgate_quota_limit",
            "The backend's quota per window (calls or recipients).",
            labels=["backend", "window"],
        )
        running = GaugeMetricFamily(
            "imgate_batches",
            "Batches this process is sending or closing, by state.",
            labels=["state"],
        )
        now = time.monotonic()
        for name, backend in backends.items():
            remaining = max(0.0, backend.limiter.blocked_until - now)
            blocked.add_metric([name], 1.0 if remaining > 0 else 0.0)
            blocked_for.add_metric([name], remaining)
            in_flight.add_metric([name], backend.in_flight)
            in_flight_limit.add_metric([name], backend.permits.limit)
            for window, used, limit in backend.limiter.usage():
                quota_used.add_metric([name, window], used)
                quota_limit.add_metric([name, window], limit)
        running.add_metric(["RUNNING"], sum(self._metrics._running.values()))
        if self._metrics._quota_reachable is not None:
            yield GaugeMetricFamily(
                "imgate_quota_store_up",
                "1 while the shared quota's Redis answers ([quota] url); 0: nothing is sent.",
                value=1.0 if self._metrics._quota_reachable() else 0.0,
            )
        if self._metrics._store_stats is not None:
            commits, statements = self._metrics._store_stats()
            yield CounterMetricFamily(
                "imgate_store_commits",
                "Store transactions committed (SQLite: one fsync each).",
                value=commits,
            )
            yield CounterMetricFamily(
                "imgate_store_statements", "SQL statements sent to the store.", value=statements
            )
        if self._metrics._tracked is not None:
            tracked = GaugeMetricFamily(
                "imgate_tracked_entries",
                "Entries this process holds per batch, stream or caller, by structure"
                " (0 when nothing runs or is watched).",
                labels=["structure"],
            )
            for structure, size in sorted(self._metrics._tracked().items()):
                tracked.add_metric([structure], size)
            yield tracked
        yield from (
            blocked,
            blocked_for,
            in_flight,
            in_flight_limit,
            quota_used,
            quota_limit,
            running,
        )


class MetricsServer:
    """`GET /metrics` on `[metrics] listen`, served from the gateway's own event loop."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self._metrics = metrics
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and serve; returns the port (port 0 in `listen` picks one). Raises
        ConfigError naming `metrics.listen` when the address cannot be bound."""
        host, port = split_listen(self._listen)
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "metrics.listen", f"cannot listen on {self._listen}: {exc.strerror or exc}"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics at http://%s:%d/metrics", host, self.port)
        return self.port

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def timer() -> Callable[[], float]:
    """A stopwatch: call the result to get the seconds since."""
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
