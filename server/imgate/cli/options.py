"""The connection options of `imgate send`, `imgate batch` and `imgate health`.

Argparse only: `imgate health` imports this and must stay light (grpc, nothing else).
"""

from __future__ import annotations

import argparse
import os
from typing import TypedDict

from imgate.config.pem import pem_problem


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--ca-file, --cert-file, --key-file and --token (defaults: $IMGATE_CA_FILE, ...)."""
    group = parser.add_argument_group("connection (TLS and callers)")
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        help="use TLS, trusting this CA for the gateway's certificate (default $IMGATE_CA_FILE)",
    )
    group.add_argument(
        "--cert-file",
        metavar="PEM",
        help="client certificate for mTLS, with --key-file (default $IMGATE_CERT_FILE)",
    )
    group.add_argument(
        "--key-file",
        metavar="PEM",
        help="private key of --cert-file (default $IMGATE_KEY_FILE)",
    )
    group.add_argument(
        "--token",
        help="the caller's bearer token (default $IMGATE_TOKEN; prefer the variable: "
        "arguments show in the process list)",
    )


# Each connection option: its flag and the environment variable that stands in for it.
_SOURCES = {
    "ca_file": ("--ca-file", "IMGATE_CA_FILE"),
    "cert_file": ("--cert-file", "IMGATE_CERT_FILE"),
    "key_file": ("--key-file", "IMGATE_KEY_FILE"),
    "token": ("--token", "IMGATE_TOKEN"),
}
_PEM = {"cert": "cert_file", "key": "key_file", "ca": "ca_file"}


def connection_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the connection options, or None. Options not given are taken
    from their environment variables first; a problem names whichever was used."""
    names: dict[str, str] = {}
    for dest, (flag, variable) in _SOURCES.items():
        names[dest] = flag
        if getattr(args, dest, None) is None and os.environ.get(variable):
            setattr(args, dest, os.environ[variable])
            names[dest] = f"${variable}"
    if (args.cert_file is None) != (args.key_file is None):
        given = names["cert_file"] if args.cert_file is not None else names["key_file"]
        return f"{given} needs its pair: --cert-file and --key-file go together"
    for dest in ("ca_file", "cert_file", "key_file"):
        path = getattr(args, dest)
        if path is not None and not os.access(path, os.R_OK):
            return f"{names[dest]}: cannot read {path}"
    found = pem_problem(args.cert_file, args.key_file, args.ca_file)
    if found is not None:
        which, problem = found
        return f"{names[_PEM[which]]}: {problem}"
    return None


class ConnectionOptions(TypedDict):
    """The GatewayClient keyword arguments these options set."""

    token: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


def connection_options(args: argparse.Namespace) -> ConnectionOptions:
    """GatewayClient keyword arguments from the parsed options."""
    return {
        "token": args.token,
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
    }
