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
HEALTH_HELP = "exit 0 when a gateway reports SERVING (no token needed)"
HEALTH_EXAMPLES = """examples:
  imgate health
  imgate health --target 127.0.0.1:50051
  imgate health --target gateway.internal:50051 --ca-file /etc/imgate/ca.pem
  imgate health --target 127.0.0.1:50060    # a TLS gateway's plaintext [health] listen"""
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
            details = exc.details() or ""
            print(f"imgate health: {target}: {exc.code().name}: {details}", file=sys.stderr)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                hint = tls_hint(target, tls=not (ca_file is None and cert_file is None))
                if hint:
                    print(f"imgate health: {hint}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def speaks_tls(target: str, timeout: float = 2.0) -> bool | None:
    """Whether `target` answers a TLS handshake (None: nothing answers there at all).
    Certificates are not checked: this only tells which protocol the port speaks."""
    import socket
    import ssl

    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            try:
                with context.wrap_socket(sock, server_hostname=host):
                    return True
            except (ssl.SSLError, OSError):
                return False
    except (OSError, ValueError):
        return None


def tls_hint(target: str, *, tls: bool) -> str:
    """What to try when `target` is UNAVAILABLE: the other protocol, if it speaks it."""
    speaks = speaks_tls(target)
    if speaks is None:
        return f"nothing answers on {target}: is the gateway running, and listening there?"
    if speaks and not tls:
        return (
            f"{target} serves TLS: give --ca-file PEM (the CA of its certificate; with mTLS"
            " also --cert-file and --key-file), or probe the gateway's plaintext"
            " [health] listen address instead"
        )
    if not speaks and tls:
        return f"{target} does not serve TLS: drop --ca-file, --cert-file and --key-file"
    if tls:
        return (
            "the TLS handshake failed: check that --ca-file signed the gateway's"
            " certificate, that the certificate names the host of --target, and, with mTLS,"
            " that --cert-file is signed by the gateway's client_ca_file"
        )
    return ""


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
        prog="imgate health",
        description=HEALTH_HELP,
        epilog=HEALTH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_health_arguments(parser)
    args = parser.parse_args(argv)
    return run_health(args)
