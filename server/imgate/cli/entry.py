"""The `imgate` console script: `imgate health` without importing the whole gateway.

A container runs the health check every few seconds; importing the gateway, the sandbox and
aiohttp for it cost most of its CPU. Every other command goes to `imgate.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Entry point of the `imgate` command."""
    argv = sys.argv[1:]
    if argv[:1] == ["health"]:
        from imgate.cli.health import main as health

        return health(argv[1:])
    from imgate.cli.main import main as cli

    return cli(argv)
