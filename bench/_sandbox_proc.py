"""The vendor sandbox in a process of its own, with bench settings.

    python -m bench._sandbox_proc --port P --config '{"tencent": {"call_limit": null}}'

`--config` maps vendor ids to keyword arguments of the vendor's settings class (fault
rules as in `PUT /sandbox/faults`); vendors left out keep their published limits. Stats
are read over HTTP: `GET /sandbox/stats?vendor=...`. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from imgate.sandbox import FaultRule, SandboxConfig, VendorSettings, serve_sandbox
from imgate.vendors.registry import BY_VENDOR


def sandbox_config(
    doc: dict[str, dict[str, Any]], max_logged_deliveries: int = 100_000
) -> SandboxConfig:
    """A SandboxConfig from `--config` JSON."""
    vendors: dict[str, VendorSettings] = {}
    for vendor, raw in doc.items():
        values = dict(raw)
        faults = tuple(FaultRule(**rule) for rule in values.pop("faults", ()))
        settings_type = BY_VENDOR[vendor].emulator.settings_type
        vendors[vendor] = settings_type(**values, faults=faults)
    return SandboxConfig(vendors=vendors, seed=1, max_logged_deliveries=max_logged_deliveries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="JSON: vendor -> settings")
    parser.add_argument(
        "--max-logged-deliveries",
        type=int,
        default=100_000,
        help="size of the delivery log's ring (a test reading a million deliveries back)",
    )
    args = parser.parse_args()
    config = sandbox_config(json.loads(args.config), args.max_logged_deliveries)
    asyncio.run(serve_sandbox("127.0.0.1", args.port, config))


if __name__ == "__main__":
    main()
