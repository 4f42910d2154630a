"""Server life cycle: the gRPC server with health and reflection, and graceful stop.

On stop (SIGTERM, Ctrl-C): health goes NOT_SERVING, new batches are refused, running
batches start no new vendor call and close every stream with an outcome for every
recipient (unsent ones FAILED/NOT_ATTEMPTED), calls in flight get the grace period, then
the HTTP sessions close.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from imgate._config import GatewayConfig
from imgate._dispatch import Backend
from imgate._reflection import enable_reflection
from imgate._servicer import GatewayServicer
from imgate.v1 import gateway_pb2, gateway_pb2_grpc

log = logging.getLogger("imgate.server")

_SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


class Gateway:
    """One running gateway: `await start()`, then `await stop()`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.backends = {b.name: Backend(b) for b in config.backends}
        self._stopping = asyncio.Event()
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]  # stubs lack .aio
        self._server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 << 20)]
        )
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(config, self.backends, self._stopping), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        enable_reflection((_SERVICE_NAME, health.SERVICE_NAME), self._server)
        self.port = 0

    async def start(self) -> int:
        """Bind `config.listen` (port 0 picks one), serve, and return the port."""
        self.port = self._server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await self._server.start()
        for service in ("", _SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop; running batches finish their streams within the grace period."""
        if self._stopping.is_set():
            return
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        self._stopping.set()
        await self._server.stop(grace)
        for backend in self.backends.values():
            await backend.close()

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()
