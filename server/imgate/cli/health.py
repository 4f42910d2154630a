"""``imgate health``: a grpc.health.v1 check light enough for a container health check.

It imports grpc and the health stubs only (not the gateway, the sandbox or aiohttp):
`imgate.cli.entry` routes ``imgate health`` here before anything else is imported.

The target defaults to ``$IMGATE_TARGET``, else the address ``$IMGATE_LISTEN`` serves on
(a wildcard host becomes 127.0.0.1), else 127.0.0.1:50051: a container that sets
``IMGATE_LISTEN`` for ``imgate serve`` needs no argument to check itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from imgate.cli.options import add_connection_arguments, connection_problem

DEFAULT_TARGET = "127.0.0.1:50051"
_WILDCARDS = {"0.0.0.0", "::", "[::]", ""}


def default_target(env: Mapping[str, str] = os.environ) -> str:
    """Where `imgate health` looks when given no --target."""
    if env.get("IMGATE_TARGET"):
        return env["IMGATE_TARGET"]
    listen = env.get("IMGATE_LISTEN")
    if listen:
        host, _, port = listen.rpartition(":")
        return f"{'127.0.0.1' if host in _WILDCARDS else host}:{port}"
    return DEFAULT_TARGET


def check(
    target: str,
    timeout: float,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> int:
    """Exit status 0 when `target` reports the overall service SERVING; prints the status.
    With `ca_file` (and `cert_file` + `key_file` for mTLS) over TLS. Health needs no token."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if ca_file is None and cert_file is None:
        channel = grpc.insecure_channel(target)
    else:

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as file:
                return file.read()

        credentials = grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))
        channel = grpc.secure_channel(target, credentials)
    with channel:
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


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """`imgate health`'s options."""
    parser.add_argument(
        "--target",
        default=default_target(),
        help="HOST:PORT of the gateway (default: $IMGATE_TARGET, else the $IMGATE_LISTEN "
        f"address, else {DEFAULT_TARGET})",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    add_connection_arguments(parser)


def run_health(args: argparse.Namespace) -> int:
    """Run `imgate health` with parsed `args`."""
    problem = connection_problem(args)
    if problem:
        print(f"imgate health: {problem}", file=sys.stderr)
        return 2
    return check(args.target, args.timeout, args.ca_file, args.cert_file, args.key_file)


def main(argv: Sequence[str]) -> int:
    """`imgate health [--target HOST:PORT] [--timeout S]` on its own."""
    parser = argparse.ArgumentParser(
        prog="imgate health", description="exit 0 when a gateway reports SERVING"
    )
    add_health_arguments(parser)
    args = parser.parse_args(argv)
    return run_health(args)
