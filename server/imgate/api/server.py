"""Server life cycle: the gRPC server with health and reflection, and graceful stop.

On start the store is opened and what a previous process left is recovered and resumed.
On stop (SIGTERM, Ctrl-C, CONTRACT.md rule 12): health goes NOT_SERVING, new batches are
refused, no new vendor call starts, calls in flight get `shutdown_grace_s`. Batches a
later start can resume (durable store, not bound to a caller) stay queued and their
streams end UNAVAILABLE; the others end here, unsent recipients FAILED/NOT_ATTEMPTED, and
their streams end with every outcome. Then the server, the HTTP sessions and the store
close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from imgate.api.callers import CallerInterceptor, RefusalLog
from imgate.api.decode import MAX_REQUEST_BYTES, add_gateway_service
from imgate.api.http import HttpServer
from imgate.api.messages import batch_message
from imgate.api.reflection import enable_reflection
from imgate.api.rpc_metrics import MetricsInterceptor
from imgate.api.service import GatewayApi
from imgate.api.servicer import GatewayServicer
from imgate.config.access import check_exposure, is_loopback, read_tls_files
from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.config.model import GatewayConfig
from imgate.observability.metrics import Metrics, MetricsServer
from imgate.observability.tracing import Tracing
from imgate.pipeline.backend import Backend
from imgate.pipeline.batches import BatchService
from imgate.pipeline.webhooks import Webhooks
from imgate.store.base import Store
from imgate.store.open import open_store
from imgate.v1 import gateway_pb2

if TYPE_CHECKING:
    # Imported when `[quota] url` is set: redis-py (and the OpenTelemetry SDK it loads)
    # is a fifth of the gateway's start-up imports (0.09 of 0.5 CPU seconds).
    from imgate.quota.redis import RedisQuota

log = logging.getLogger("imgate.server")

_FLUSH_S = 2.0
# With [quota]: how often health checks that Redis answers (one PING, then each app's
# pauses).
QUOTA_HEALTH_EVERY_S = 2.0
_SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


class Gateway:
    """One running gateway: `await start()`, then `await stop()`."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store | None = None,
        clock: Callable[[], float] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """`store` overrides the configured one, `clock` the wall clock, `tracing` the
        configured exporter (tests). Raises ConfigError when `[tracing]` is on without
        the otel extra."""
        self.config = config
        weights = {caller.name: caller.weight for caller in config.callers}
        self.metrics = Metrics()
        self.tracing = tracing or Tracing.from_endpoint(config.tracing_otlp_endpoint)
        # [quota] url: every backend's windows live in Redis, shared with the other
        # replicas (CONTRACT §5 rule 14); the fair queue between callers stays here.
        self.quota: RedisQuota | None = None
        if config.quota_url:
            from imgate.quota.redis import RedisQuota

            self.quota = RedisQuota(config.quota_url, config.quota_key_prefix, config.lease_s)
        self.backends = {
            b.name: Backend(
                b,
                self.metrics,
                self.tracing,
                weights,
                self.quota.limiter(b) if self.quota is not None else None,
                self.quota.limiter(b, "recall")
                if self.quota is not None and b.recallable
                else None,
            )
            for b in config.backends
        }
        quota = self.quota
        self.metrics.watch(self.backends, (lambda: quota.reachable) if quota is not None else None)
        if store is None:
            store = open_store(
                config.store_url or "sqlite:imgate.db", Path(config.state_dir), config.lease_s
            )
        self.store = store
        # [[webhooks]] (CONTRACT rule 28): told when batches end, with the Batch as
        # GetBatch answers it.
        webhooks = (
            Webhooks(config.webhooks, store, self.metrics, batch_message)
            if config.webhooks
            else None
        )
        self.batches = BatchService(
            self.backends,
            store,
            config.batch_retention_s,
            clock,
            self.metrics,
            self.tracing,
            lease_s=config.lease_s,
            webhooks=webhooks,
        )
        self.batches.store_reachable = self._store_reachable
        self.metrics.watch_process(
            lambda: (lambda stats: (stats.commits, stats.statements))(store.stats()),
            self.tracked,
        )
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs lack .aio
        self._metrics_server = (
            MetricsServer(self.metrics, config.metrics_listen) if config.metrics_listen else None
        )
        # Callers (CONTRACT §6): every RPC but health needs a configured caller's token.
        # After the metrics interceptor, so refused calls are counted too.
        self.refusals = RefusalLog()
        """Calls refused for want of a known token, gRPC and HTTP: a log line a while."""
        callers = [CallerInterceptor(config.callers, self.refusals)] if config.callers else []
        self._server = grpc.aio.server(
            # Tracing first: the SERVER span (rule 33) covers refused calls too.
            interceptors=[
                *self.tracing.server_interceptors(),
                MetricsInterceptor(self.metrics.grpc),
                *callers,
            ],
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ],
        )
        # Not the generated add_..._to_server: undecodable requests are INVALID_ARGUMENT.
        self.api = GatewayApi(config, self.backends, self.batches)
        """The service's operations, for every transport."""
        add_gateway_service(GatewayServicer(self.api), self._server)
        # [http] listen: the same operations as HTTP/JSON, the console, openapi.json.
        self._http = (
            HttpServer(config, self.api, self.metrics.grpc, refusals=self.refusals)
            if config.http_listen
            else None
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        enable_reflection((_SERVICE_NAME, health.SERVICE_NAME), self._server)
        # [health] listen (CONTRACT §11 rule 31): the health service alone, in plaintext
        # and open to all, for probes that cannot speak TLS; reflection there describes
        # health only, so grpcurl needs no token nor proto file to call it.
        self._health_server: grpc.aio.Server | None = None
        if config.health_listen:
            self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            enable_reflection((health.SERVICE_NAME,), self._health_server)
        self.health_port = 0
        """Where the plaintext health service is served once started (0: not served)."""
        self.port = 0
        self.metrics_port = 0
        """Where GET /metrics is served once started (0: metrics not served)."""
        self.http_port = 0
        """Where HTTP/JSON is served once started (0: [http] is off)."""
        self._store_ok = True
        self._quota_ok = True
        self._quota_watch: asyncio.Task[None] | None = None

    def tracked(self) -> dict[str, int]:
        """Sizes of what the gateway holds per batch, stream or caller: each returns to 0
        once they end (the soak test checks it; /metrics shows it)."""
        return {**self.batches.tracked(), "cancel_tasks": self.api.cancel_tasks}

    async def start(self) -> int:
        """Open the store (resuming its batches), bind `config.listen` (port 0 picks one),
        serve, and return the port. Raises StoreError, OSError, or ConfigError (rule 18,
        unreadable or mismatched TLS files, metrics.listen or health.listen cannot be
        bound)."""
        check_exposure(self.config)
        host, _ = split_listen(self.config.listen)
        if self.config.callers and self.config.tls is None and not is_loopback(host):
            log.warning(
                "serving %s without [tls]: bearer tokens and messages cross the network in"
                " clear text",
                self.config.listen,
            )
        if self.config.tls is None:
            self.port = self._server.add_insecure_port(self.config.listen)
        else:
            chain, key, client_ca = read_tls_files(self.config.tls)
            credentials = grpc.ssl_server_credentials(
                [(key, chain)],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = self._server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        if self._health_server is not None:
            try:
                self.health_port = self._health_server.add_insecure_port(self.config.health_listen)
            except RuntimeError:
                self.health_port = 0
            if self.health_port == 0:
                raise ConfigError("health.listen", f"cannot listen on {self.config.health_listen}")
        if self._metrics_server is not None:
            self.metrics_port = await self._metrics_server.start()
        if self._http is not None:
            try:
                self.http_port = await self._http.start()
            except BaseException:
                if self._metrics_server is not None:
                    await self._metrics_server.stop()
                raise
        if self.quota is not None and await self.quota.refresh():
            # Unreachable is no start-up error (fail closed: nothing is sent until it
            # answers, and the error is logged); a wrong URL is one (quota.url).
            log.info("vendor quotas shared through %s", self.quota.shown_url)
        try:
            await self.batches.start()
        except BaseException:
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            if self._http is not None:
                await self._http.stop()
            raise
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
            log.info(
                "health (plaintext, no token) on %s:%d",
                self.config.health_listen.rpartition(":")[0],
                self.health_port,
            )
        await self._store_reachable(self.batches.store_answers)
        if self.quota is not None:
            self._quota_ok = bool(self.quota.reachable)
            await self._publish_health()
            self._quota_watch = asyncio.create_task(self._watch_quota(self.quota))
        return self.port

    async def _store_reachable(self, reachable: bool) -> None:
        self._store_ok = reachable
        if not reachable:
            log.error("the store does not answer: health is NOT_SERVING until it does")
        await self._publish_health()

    async def _watch_quota(self, quota: RedisQuota) -> None:
        # Between vendor calls nothing else would notice Redis going away (or coming
        # back); the ping logs the change itself, like every other call to Redis.
        while True:
            await asyncio.sleep(QUOTA_HEALTH_EVERY_S)
            # Each app's pauses too, so that ListBackends shows one that another replica
            # started, or a state lost in Redis, before a call waits for it (rule 32).
            reachable = await quota.refresh()
            if reachable != self._quota_ok:
                self._quota_ok = reachable
                await self._publish_health()

    async def _publish_health(self) -> None:
        # A replica that can reach neither its shared store nor (with [quota]) the shared
        # quota can send nothing: a load balancer should send callers to another. Health
        # is NOT_SERVING until both answer again (CONTRACT §5: fail closed).
        status = health_pb2.HealthCheckResponse.SERVING
        if not (self._store_ok and self._quota_ok):
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        if self.batches.stopping.is_set():
            return  # graceful shutdown has set NOT_SERVING for good
        for service in ("", _SERVICE_NAME):
            await self._health.set(service, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop; running batches finish their streams within the grace period."""
        if self.batches.stopping.is_set():
            return
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        if self._quota_watch is not None:
            self._quota_watch.cancel()
        await self._health.enter_graceful_shutdown()
        await self.batches.stop(grace)
        # Streams now end (every outcome, or UNAVAILABLE); give them a moment to flush.
        await self._server.stop(_FLUSH_S)
        if self._http is not None:
            await self._http.stop()
        if self._health_server is not None:
            await self._health_server.stop(None)
        for backend in self.backends.values():
            await backend.close()
        if self.quota is not None:
            await self.quota.close()
        await self.batches.close()
        # Last: a scrape during the drain still sees the final counts.
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        self.tracing.close()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()
