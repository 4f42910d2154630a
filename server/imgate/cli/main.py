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
import socket
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from imgate import __version__
from imgate.api.callers import new_token, token_sha256
from imgate.api.server import Gateway
from imgate.cli.batch import BATCH_EXAMPLES, add_batch_arguments, run_batch
from imgate.cli.health import HEALTH_EXAMPLES, HEALTH_HELP, add_health_arguments, run_health
from imgate.cli.send import SEND_EXAMPLES, add_send_arguments, run_send
from imgate.config.access import check_exposure, is_loopback
from imgate.config.addresses import listen_address, split_listen, time_scale
from imgate.config.errors import ConfigError
from imgate.config.load import load_config, sandbox_config
from imgate.config.model import DEFAULT_LISTEN, GatewayConfig
from imgate.config.redaction import redacted_url
from imgate.config.values import check_otlp_endpoint
from imgate.observability.logs import configure_logging
from imgate.sandbox import SandboxConfig, SandboxServer, serve_sandbox
from imgate.store.base import StoreError
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


# Sandbox mode's emulators (and /sandbox/...) listen here: a fixed, documented address.
DEFAULT_SANDBOX_LISTEN_IN_SERVE = "127.0.0.1:50052"
# Sandbox mode's HTTP/JSON API and console ([http] listen of a configured gateway).
DEFAULT_HTTP_LISTEN_IN_SANDBOX = "127.0.0.1:50053"


def examples(*lines: str) -> str:
    """An `epilog` of example command lines (every help shows some: tests run them
    through the parser)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


EXAMPLES = {
    "imgate": examples(
        ".venv/bin/imgate serve                       # sandbox mode: nothing leaves the machine",
        ".venv/bin/imgate send --to bob --text hi",
        ".venv/bin/imgate config check --config /etc/imgate/imgate.toml",
        ".venv/bin/imgate health --target 127.0.0.1:50051",
    ),
    "serve": examples(
        "imgate serve",
        "imgate serve --sandbox-time-scale 60 --metrics-listen 127.0.0.1:9464",
        "imgate serve --otlp-endpoint http://127.0.0.1:4317",
        "imgate serve --config /etc/imgate/imgate.toml --listen 0.0.0.0:50051",
        "IMGATE_CONFIG=/etc/imgate/imgate.toml imgate serve",
    ),
    "config": examples("imgate config check --config /etc/imgate/imgate.toml"),
    "config check": examples(
        "imgate config check --config /etc/imgate/imgate.toml",
        "IMGATE_CONFIG=/etc/imgate/imgate.toml imgate config check",
    ),
    "token": examples("imgate token new", 'echo "$IMGATE_TOKEN" | imgate token hash'),
    "token new": examples("imgate token new"),
    "token hash": examples('echo "$IMGATE_TOKEN" | imgate token hash'),
    "sandbox": examples(
        "imgate sandbox",
        "imgate sandbox --listen 0.0.0.0:8080 --sandbox-time-scale 60",
    ),
}


def _command(
    commands: Any, name: str, help_text: str, example_key: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXAMPLES[example_key or name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgate",
        description=__doc__,
        epilog=EXAMPLES["imgate"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = _command(commands, "serve", "run the gateway (sandbox mode without config)")
    serve.add_argument("--config", help="TOML configuration file (default: $IMGATE_CONFIG)")
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="sandbox mode on purpose: needed to serve it beyond loopback; no config allowed",
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        help=f"HOST:PORT to serve on (default $IMGATE_LISTEN, else the config's, else"
        f" {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--http-listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="HTTP/JSON API and web console (default: the config's [http] listen; sandbox"
        f" mode {DEFAULT_HTTP_LISTEN_IN_SANDBOX}; port 0 = any free port)",
    )
    serve.add_argument(
        "--log-level", help="logging level (default: the config's [log] level, else INFO)"
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help='batch store, e.g. "sqlite:///var/lib/imgate/imgate.db" or "postgresql://imgate@db/'
        'imgate" (default: the config\'s; sandbox mode: "memory")',
    )
    serve.add_argument(
        "--metrics-listen",
        type=listen_address,
        metavar="HOST:PORT",
        help="serve Prometheus text at GET /metrics there (overrides [metrics] listen;"
        " sandbox mode: off unless given)",
    )
    serve.add_argument(
        "--otlp-endpoint",
        type=_otlp_endpoint,
        metavar="URL",
        help="export OpenTelemetry traces to this OTLP/gRPC collector, e.g."
        " http://127.0.0.1:4317 (overrides [tracing] otlp_endpoint; needs the otel extra)",
    )
    serve.add_argument(
        "--sandbox-listen",
        type=listen_address,
        default=DEFAULT_SANDBOX_LISTEN_IN_SERVE,
        help="sandbox mode: HOST:PORT of the emulators and /sandbox/... "
        f"(default {DEFAULT_SANDBOX_LISTEN_IN_SERVE}; port 0 = any free port)",
    )
    serve.add_argument(
        "--sandbox-time-scale",
        type=time_scale,
        default=1.0,
        metavar="FACTOR",
        help="sandbox mode: rate windows and blocks last 1/FACTOR of the vendors' (default 1)",
    )
    config = _command(commands, "config", "check a configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check_config = _command(
        config_commands,
        "check",
        "load a configuration file as `imgate serve` would, and report what is wrong"
        " (exit 0: usable; 2: not, with start-up's message)",
        "config check",
    )
    check_config.add_argument("--config", help="TOML configuration file (default: $IMGATE_CONFIG)")
    token = _command(commands, "token", "bearer tokens for [callers.NAME] tables")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    _command(token_commands, "new", "print a new random token and its token_sha256", "token new")
    _command(
        token_commands, "hash", "print the token_sha256 of the token read on stdin", "token hash"
    )
    sandbox = _command(commands, "sandbox", "run only the vendor emulators")
    sandbox.add_argument(
        "--listen",
        type=listen_address,
        default="127.0.0.1:8080",
        help="HOST:PORT (default 127.0.0.1:8080)",
    )
    sandbox.add_argument(
        "--sandbox-time-scale",
        type=time_scale,
        default=1.0,
        metavar="FACTOR",
        help="rate windows and blocks last 1/FACTOR of the vendors' (default 1)",
    )
    check = commands.add_parser(
        "health",
        help=HEALTH_HELP,
        description=HEALTH_HELP,
        epilog=HEALTH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_health_arguments(check)
    send = commands.add_parser(
        "send",
        help="send one message to many recipients",
        description="send one message to many recipients",
        epilog=SEND_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_send_arguments(send)
    batch = commands.add_parser(
        "batch",
        help="durable batches: submit, watch, get, list, cancel, recall",
        description="durable batches: submit, watch, get, list, cancel, recall",
        epilog=BATCH_EXAMPLES["batch"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_batch_arguments(batch)
    return parser


def _otlp_endpoint(value: str) -> str:
    try:
        return check_otlp_endpoint("--otlp-endpoint", value)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(error.problem) from None


async def _serve(
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "send":
        return run_send(args)
    if args.command == "batch":
        return run_batch(args)
    if args.command == "health":
        return run_health(args)
    if args.command == "token":
        return _token(args.token_command)
    if args.command == "config":
        return _check_config(args.config)
    configure_logging(getattr(args, "log_level", None) or "INFO")
    if args.command == "sandbox":
        host, port = split_listen(args.listen)
        config = SandboxConfig(time_scale=args.sandbox_time_scale)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve_sandbox(host, port, config))
        except OSError as exc:
            message = f"imgate sandbox: cannot listen on {args.listen}: {exc.strerror}"
            print(message, file=sys.stderr)
            return 1
        return 0
    config_path = _config_path(args.config, os.environ)
    if isinstance(config_path, int):
        return config_path
    if args.sandbox and config_path:
        source = "--config" if args.config else "IMGATE_CONFIG"
        print(f"imgate: --sandbox and {source} exclude each other: choose one", file=sys.stderr)
        return 2
    listen, listen_source = args.listen, "--listen"
    if listen is None and os.environ.get("IMGATE_LISTEN"):
        listen, listen_source = os.environ["IMGATE_LISTEN"], "IMGATE_LISTEN"
        try:
            split_listen(listen)
        except ValueError as exc:
            # The variable is the culprit, not the flag nobody typed.
            print(
                f"imgate: the environment variable IMGATE_LISTEN {exc}; fix or unset it"
                " (--listen overrides it)",
                file=sys.stderr,
            )
            return 2
    return asyncio.run(
        _serve(
            config_path,
            listen,
            args.sandbox_listen,
            args.sandbox_time_scale,
            args.store,
            args.log_level,
            explicit_sandbox=args.sandbox,
            http_listen=args.http_listen,
            listen_source=listen_source,
            metrics_listen=args.metrics_listen,
            otlp_endpoint=args.otlp_endpoint,
        )
    )


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


def _check_config(flag: str | None) -> int:
    """`imgate config check`: what `imgate serve --config` would refuse at start-up,
    with the same message and exit status, short of binding and connecting."""
    if flag is None and not os.environ.get("IMGATE_CONFIG"):
        print(
            "imgate config check: no configuration given (--config FILE or IMGATE_CONFIG)",
            file=sys.stderr,
        )
        return 2
    path = _config_path(flag, os.environ)
    if not isinstance(path, str):
        return 2
    try:
        config = load_config(path, os.environ)
        check_exposure(config)
        _check_tracing(config)
    except ConfigError as exc:
        print(f"imgate: configuration error: {exc}", file=sys.stderr)
        return 2
    print(_describe(path, config))
    return 0


def _check_tracing(config: GatewayConfig) -> None:
    if not config.tracing_otlp_endpoint:
        return
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tracing.otlp_endpoint", "tracing needs the otel extra: pip install 'imgate[otel]'"
        ) from None


def _describe(path: str, config: GatewayConfig) -> str:
    backends = ", ".join(f"{b.name} ({b.vendor})" for b in config.backends)
    parts = [
        f"{path}: OK",
        f"listen {config.listen}" + (" (TLS)" if config.tls else ""),
        f"backends {backends}; default {config.default_backend}",
        f"callers {len(config.callers)}" if config.callers else "no callers",
        f"store {redacted_url(config.store_url) if config.store_url else 'sqlite'}",
    ]
    if config.quota_url:
        parts.append("shared quota")
    return "; ".join(parts)


def _config_path(flag: str | None, env: Mapping[str, str]) -> str | int | None:
    """The configuration file to load, None for sandbox mode, or an exit status after
    saying why a named file cannot be used (rule 20: never sandbox mode instead)."""
    source, path = ("--config", flag) if flag is not None else ("IMGATE_CONFIG", None)
    if flag is None:
        path = env.get("IMGATE_CONFIG")
    if path is None:
        return None
    if not path or not os.path.isfile(path):
        print(
            f"imgate: {source} names {path!r}, which is not a file; refusing to start"
            " (without a configuration imgate would run the sandbox, not your backends)",
            file=sys.stderr,
        )
        return 2
    return path


def _token(command: str) -> int:
    if command == "new":
        token = new_token()
        print(f"token:        {token}")
        print(f"token_sha256: {token_sha256(token)}")
        print("Give the token to its caller; configure only token_sha256.", file=sys.stderr)
        return 0
    token = sys.stdin.readline().strip()
    if not token:
        print("imgate token hash: read no token on stdin", file=sys.stderr)
        return 2
    print(token_sha256(token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
