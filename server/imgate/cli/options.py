"""The connection options of `imgate send`, `imgate batch` and `imgate health`.

Argparse only: `imgate health` imports this and must stay light (grpc, nothing else).
"""

from __future__ import annotations

import argparse
import os
from typing import TypedDict


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--ca-file, --cert-file, --key-file and --token (default $IMGATE_TOKEN)."""
    group = parser.add_argument_group("connection (TLS and callers)")
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        default=os.environ.get("IMGATE_CA_FILE"),
        help="use TLS, trusting this CA for the gateway's certificate (default $IMGATE_CA_FILE)",
    )
    group.add_argument(
        "--cert-file",
        metavar="PEM",
        default=os.environ.get("IMGATE_CERT_FILE"),
        help="client certificate for mTLS, with --key-file (default $IMGATE_CERT_FILE)",
    )
    group.add_argument(
        "--key-file",
        metavar="PEM",
        default=os.environ.get("IMGATE_KEY_FILE"),
        help="private key of --cert-file (default $IMGATE_KEY_FILE)",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("IMGATE_TOKEN"),
        help="the caller's bearer token (default $IMGATE_TOKEN; prefer the variable: "
        "arguments show in the process list)",
    )


def connection_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the connection options, or None."""
    if (args.cert_file is None) != (args.key_file is None):
        return "--cert-file and --key-file go together"
    for flag, path in (
        ("--ca-file", args.ca_file),
        ("--cert-file", args.cert_file),
        ("--key-file", args.key_file),
    ):
        if path is not None and not os.access(path, os.R_OK):
            return f"{flag}: cannot read {path}"
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
