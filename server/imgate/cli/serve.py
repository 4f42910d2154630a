"""``imgate serve``: run the gateway until SIGTERM or SIGINT, from a configuration file or,
without one, in sandbox mode beside the built-in vendor emulators."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
import textwrap

from imgate import __version__
from imgate.api.server import Gateway
from imgate.config.access import is_loopback
from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.config.load import load_config, sandbox_config
from imgate.config.model import (
    DEFAULT_HTTP_LISTEN_IN_SANDBOX,
    DEFAULT_LISTEN,
    DEFAULT_SANDBOX_LISTEN_IN_SERVE,
    GatewayConfig,
)
from imgate.observability.logs import configure_logging
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.store.records import StoreError
from imgate.vendors.registry import BY_VENDOR

log = logging.getLogger("imgate")

_RULE = "=" * 78


def _sandbox_notice(config: GatewayConfig, sandbox_url: str, http_url: str = "") -> str:
    """The sandbox-mode warning, naming the backends the config has (one per vendor), and
    where the console and the HTTP/JSON API answer (`http_url`, when served)."""
    names = [backend.name for backend in config.backends]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    default = config.backend("")
    no_sender = default is not None and not BY_VENDOR[default.vendor].spec.sender_required
    text = (
        f"imgate SANDBOX MODE: no configuration given. Backends {listed} point at"
        f" built-in vendor emulators on {sandbox_url}. NOTHING reaches a real vendor."
        " Use --config FILE (or IMGATE_CONFIG) for real ones."
        f" Default backend: {config.default_backend}"
        + (" (no --from needed)." if no_sender else ".")
    )
    lines = textwrap.wrap(text, width=len(_RULE) - 2)
    lines.append(f"Control API: {sandbox_url}/sandbox/")
    lines += [f"Webhook events: {hook.url}" for hook in config.webhooks]  # the inbox
    if http_url:
        lines += [
            f"Console: {http_url}/   HTTP/JSON API: {http_url}/v1/",
            f"OpenAPI: {http_url}/v1/openapi.json",
        ]
    return "\n".join([_RULE, *(f" {line}" for line in lines), _RULE, ""])


async def serve_gateway(
    config_path: str | None,
    listen: str | None,
    sandbox_listen: str = DEFAULT_SANDBOX_LISTEN_IN_SERVE,
    scale: float = 1.0,
    store: str | None = None,
    log_level: str | None = None,
    explicit_sandbox: bool = False,
    http_listen: str | None = None,
    listen_source: str = "--listen",
    metrics_listen: str | None = None,
    otlp_endpoint: str | None = None,
) -> int:
    if not config_path:
        listen_host, _ = split_listen(listen or DEFAULT_LISTEN)
        if not explicit_sandbox and not is_loopback(listen_host):
            # Rule 20: a missing config must never turn a real address into a sandbox.
            print(
                f"imgate: no configuration given (--config / IMGATE_CONFIG), and sandbox mode"
                f" serves only on loopback; {listen_source} {listen} is not. Give --config"
                " FILE, or --sandbox to run the sandbox there on purpose",
                file=sys.stderr,
            )
            return 2
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
            if http_listen:
                config = dataclasses.replace(config, http_listen=http_listen)
            if store:
                config = dataclasses.replace(config, store_url=store)
            configure_logging(log_level or config.log_level, config.log_format)
        else:
            host, port = split_listen(sandbox_listen)
            try:
                sandbox = await stack.enter_async_context(
                    SandboxServer(host, port, SandboxConfig(time_scale=scale))
                )
            except OSError as exc:
                print(
                    f"imgate: cannot listen on {sandbox_listen} for the sandbox: {exc.strerror}"
                    " (choose another with --sandbox-listen; port 0 = any free port)",
                    file=sys.stderr,
                )
                return 1
            config = sandbox_config(
                sandbox.url,
                listen or DEFAULT_LISTEN,
                time_scale=scale,
                store_url=store or "memory",
                webhook_inbox=True,  # every event in the sandbox's inbox (docs/sandbox.md)
            )
            # --sandbox (checked above) is the explicit permission beyond loopback.
            config = dataclasses.replace(
                config,
                allow_unauthenticated=explicit_sandbox,
                http_listen=http_listen or DEFAULT_HTTP_LISTEN_IN_SANDBOX,
            )
        if metrics_listen:
            config = dataclasses.replace(config, metrics_listen=metrics_listen)
        if otlp_endpoint:
            config = dataclasses.replace(config, tracing_otlp_endpoint=otlp_endpoint)
        flags = {
            "metrics.listen": "--metrics-listen" if metrics_listen else None,
            "tracing.otlp_endpoint": "--otlp-endpoint" if otlp_endpoint else None,
            "listen": listen_source if listen else None,
        }
        # Batches allocate millions of short-lived objects (outcomes, chunk slices) that the
        # default GC thresholds rescan over and over: measured 11-17% of CPU (bench/).
        gc.set_threshold(10_000, 10, 10)
        if config.sandbox and not http_listen and not _can_bind(config.http_listen):
            # Sandbox mode's default HTTP port is a convenience: taken (another sandbox
            # gateway runs there), the gateway serves gRPC alone rather than not at all.
            print(
                f"imgate: cannot listen on {config.http_listen} for HTTP/JSON and the console"
                " (taken); serving without HTTP (--http-listen)",
                file=sys.stderr,
            )
            config = dataclasses.replace(config, http_listen="")
        try:
            gateway = Gateway(config)
            port = await gateway.start()
        except ConfigError as exc:
            # Rule 18 and unreadable [tls] files name their key, as load_config's errors do;
            # a value a flag or variable gave names that instead.
            flag = flags.get(exc.key)
            if flag is not None:
                print(f"imgate: {flag}: {exc.problem}", file=sys.stderr)
            else:
                print(f"imgate: configuration error: {exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"imgate: {exc}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as exc:
            source = f" (from {listen_source})" if listen else ""
            print(f"imgate: cannot listen on {config.listen}{source}: {exc}", file=sys.stderr)
            return 1
        # What start-up made (modules, descriptors, the server: several hundred thousand
        # objects) lives as long as the process; frozen, a full collection no longer
        # walks it: those took 20-55 ms each, mid-batch, collecting nothing (issue 15).
        gc.collect()
        gc.freeze()
        if config.sandbox:
            notice = _sandbox_notice(config, config.sandbox_url, _http_url(config, gateway))
            print(notice, file=sys.stderr, flush=True)
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


def _can_bind(listen: str) -> bool:
    host, port = split_listen(listen)
    try:
        with socket.create_server((host, port)):
            return True
    except OSError:
        return False


def _http_url(config: GatewayConfig, gateway: Gateway) -> str:
    """Where the gateway serves HTTP/JSON and the console ("" when it does not)."""
    if not gateway.http_port:
        return ""
    host = split_listen(config.http_listen)[0]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{gateway.http_port}"
