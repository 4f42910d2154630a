"""The `imgate` command: serve the gateway, run the vendor sandbox, or send a batch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate import __version__
from imgate._batch_command import add_batch_arguments, run_batch
from imgate._config import DEFAULT_LISTEN, ConfigError, load_config, sandbox_config
from imgate._logging import configure_logging
from imgate._send_command import add_send_arguments, run_send
from imgate._server import Gateway
from imgate._store import StoreError
from imgate.sandbox import SandboxServer, serve_sandbox

log = logging.getLogger("imgate")

_SANDBOX_NOTICE = """\
==============================================================================
 imgate SANDBOX MODE: no configuration given. Backends yunxin_v1, yunxin_v2 and
 tencent point at built-in vendor emulators on {sandbox}.
 NOTHING reaches a real vendor. Use --config FILE (or IMGATE_CONFIG) for real ones.
==============================================================================
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (sandbox mode without config)")
    serve.add_argument("--config", help="TOML configuration file (default: $IMGATE_CONFIG)")
    serve.add_argument("--listen", help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN})")
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help='batch store, e.g. "sqlite:///var/lib/imgate/imgate.db" (default: the config\'s; '
        'sandbox mode: "memory")',
    )
    sandbox = commands.add_parser("sandbox", help="run only the vendor emulators")
    sandbox.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)"
    )
    check = commands.add_parser("health", help="exit 0 when a gateway reports SERVING")
    check.add_argument("--target", default=DEFAULT_LISTEN, help="HOST:PORT of the gateway")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    send = commands.add_parser("send", help="send one message to many recipients")
    add_send_arguments(send)
    batch = commands.add_parser("batch", help="durable batches: submit, watch, get, list, cancel")
    add_batch_arguments(batch)
    return parser


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"imgate: --listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


async def _serve(config_path: str | None, listen: str | None, store: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if config_path:
            try:
                config = load_config(config_path, os.environ)
            except ConfigError as exc:
                print(f"imgate: configuration error: {exc}", file=sys.stderr)
                return 2
            if listen:
                config = dataclasses.replace(config, listen=listen)
            if store:
                config = dataclasses.replace(config, store_url=store)
        else:
            sandbox = await stack.enter_async_context(SandboxServer("127.0.0.1", 0))
            config = sandbox_config(sandbox.url, listen or DEFAULT_LISTEN, store or "memory")
            print(_SANDBOX_NOTICE.format(sandbox=sandbox.url), file=sys.stderr, flush=True)
        # Batches allocate millions of short-lived objects (outcomes, chunk slices) that the
        # default GC thresholds rescan over and over: measured 11-17% of CPU (bench/).
        gc.set_threshold(10_000, 10, 10)
        try:
            gateway = Gateway(config)
            port = await gateway.start()
        except StoreError as exc:
            print(f"imgate: {exc}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as exc:
            print(f"imgate: cannot listen on {config.listen}: {exc}", file=sys.stderr)
            return 1
        host = config.listen.rpartition(":")[0]
        backends = ", ".join(f"{b.name} ({b.vendor})" for b in config.backends)
        log.info(
            "imgate %s serving on %s:%d; backends: %s; default: %s",
            __version__,
            host,
            port,
            backends,
            config.default_backend,
        )
        await stop.wait()
        log.info("stopping: draining batches (grace %.0fs)", config.shutdown_grace_s)
        await gateway.stop()
        log.info("stopped")
    return 0


def _health(target: str, timeout: float) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(f"imgate health: {target}: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "send":
        return run_send(args)
    if args.command == "batch":
        return run_batch(args)
    if args.command == "health":
        return _health(args.target, args.timeout)
    configure_logging(getattr(args, "log_level", "INFO"))
    if args.command == "sandbox":
        host, port = _split_listen(args.listen)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_sandbox(host, port))
        return 0
    config_path = args.config or os.environ.get("IMGATE_CONFIG")
    return asyncio.run(_serve(config_path, args.listen, args.store))


if __name__ == "__main__":
    sys.exit(main())
