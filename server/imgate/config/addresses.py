"""`HOST:PORT` arguments of the `imgate` command, checked before anything binds."""

from __future__ import annotations

import argparse
import math

MAX_PORT = 65535


def split_listen(listen: str) -> tuple[str, int]:
    """`("127.0.0.1", 8080)` from `"127.0.0.1:8080"` (`[::1]:8080` for IPv6).

    ValueError when the host is missing or the port is not a number within 0..65535 (0 =
    any free port): the OS would otherwise silently bind `port % 65536`.
    """
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > MAX_PORT:
        raise ValueError(f"must be HOST:PORT with a port within 0..{MAX_PORT}, got {listen!r}")
    return host.strip("[]"), int(port)


def listen_address(value: str) -> str:
    """argparse `type=` for HOST:PORT options: the value itself, once checked."""
    try:
        split_listen(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def time_scale(value: str) -> float:
    """argparse `type=` for `--sandbox-time-scale`: a finite number > 0."""
    try:
        scale = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise argparse.ArgumentTypeError("must be a finite number greater than 0")
    return scale
