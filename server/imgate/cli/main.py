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
import textwrap
from collections.abc import Mapping, Sequence

from imgate import __version__
from imgate.api.callers import new_token, token_sha256
from imgate.api.server import Gateway
from imgate.cli.batch import add_batch_arguments, run_batch
from imgate.cli.health import add_health_arguments, run_health
from imgate.cli.send import add_send_arguments, run_send
from imgate.config.addresses import listen_address, split_listen, time_scale
from imgate.config.load import (
    DEFAULT_LISTEN,
    ConfigError,
    GatewayConfig,
    is_loopback,
    load_config,
    sandbox_config,
)
from imgate.observability.logs import configure_logging
from imgate.sandbox import SandboxConfig, SandboxServer, serve_sandbox
from imgate.store.base import StoreError
from imgate.vendors.registry import BY_VENDOR

log = logging.getLogger("imgate")

_RULE = "=" * 78


def _sandbox_notice(config: GatewayConfig, sandbox_url: str) -> str:
    """The sandbox-mode warning, naming the backends the config has (one per vendor)."""
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
        + f" Control API: {sandbox_url}/sandbox/"
    )
    for hook in config.webhooks:  # the sandbox's inbox
        text += f"; webhook events: GET {hook.url}"
    lines = textwrap.wrap(text, width=len(_RULE) - 2)
    return "\n".join([_RULE, *(f" {line}" for line in lines), _RULE, ""])


# Sandbox mode's emulators (and /sandbox/...) listen here: a fixed, documented address.
DEFAULT_SANDBOX_LISTEN_IN_SERVE = "127.0.0.1:50052"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (sandbox mode without config)")
    serve.add_argument("--config", help="TOML configuration file (default: $IMGATE_CONFIG)")
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="sandbox mode on purpose: needed to serve it beyond loopback; no config allowed",
    )
    serve.add_argument(
        "--listen",
        type=listen_address,
        default=os.environ.get("IMGATE_LISTEN"),
        help=f"HOST:PORT to serve on (default $IMGATE_LISTEN, else {DEFAULT_LISTEN})",
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
    token = commands.add_parser("token", help="bearer tokens for [callers.NAME] tables")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    token_commands.add_parser("new", help="print a new random token and its token_sha256")
    token_commands.add_parser("hash", help="print the token_sha256 of the token read on stdin")
    sandbox = commands.add_parser("sandbox", help="run only the vendor emulators")
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
    check = commands.add_parser("health", help="exit 0 when a gateway reports SERVING")
    add_health_arguments(check)
    send = commands.add_parser("send", help="send one message to many recipients")
    add_send_arguments(send)
    batch = commands.add_parser("batch", help="durable batches: submit, watch, get, list, cancel")
    add_batch_arguments(batch)
    return parser


async def _serve(
    config_path: str | None,
    listen: str | None,
    sandbox_listen: str = DEFAULT_SANDBOX_LISTEN_IN_SERVE,
    scale: float = 1.0,
    store: str | None = None,
    log_level: str | None = None,
    explicit_sandbox: bool = False,
) -> int:
    if not config_path:
        listen_host, _ = split_listen(listen or DEFAULT_LISTEN)
        if not explicit_sandbox and not is_loopback(listen_host):
            # Rule 20: a missing config must never turn a real address into a sandbox.
            print(
                f"imgate: no configuration given (--config / IMGATE_CONFIG), and sandbox mode"
                f" serves only on loopback; --listen {listen} is not. Give --config FILE,"
                " or --sandbox to run the sandbox there on purpose",
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
            config = dataclasses.replace(config, allow_unauthenticated=explicit_sandbox)
            print(_sandbox_notice(config, sandbox.url), file=sys.stderr, flush=True)
        # Batches allocate millions of short-lived objects (outcomes, chunk slices) that the
        # default GC thresholds rescan over and over: measured 11-17% of CPU (bench/).
        gc.set_threshold(10_000, 10, 10)
        try:
            gateway = Gateway(config)
            port = await gateway.start()
        except ConfigError as exc:
            # Rule 18 and unreadable [tls] files name their key, as load_config's errors do.
            print(f"imgate: configuration error: {exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"imgate: {exc}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as exc:
            print(f"imgate: cannot listen on {config.listen}: {exc}", file=sys.stderr)
            return 1
        # What start-up made (modules, descriptors, the server: several hundred thousand
        # objects) lives as long as the process; frozen, a full collection no longer
        # walks it: those took 20-55 ms each, mid-batch, collecting nothing (issue 15).
        gc.collect()
        gc.freeze()
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
    return asyncio.run(
        _serve(
            config_path,
            args.listen,
            args.sandbox_listen,
            args.sandbox_time_scale,
            args.store,
            args.log_level,
            explicit_sandbox=args.sandbox,
        )
    )


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
