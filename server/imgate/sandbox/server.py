"""Running the sandbox: an async context manager for tests and the `imgate sandbox` loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

from aiohttp import web

from imgate.sandbox.app import STATE_KEY, build_app
from imgate.vendors.base.emulation import SandboxConfig
from imgate.vendors.base.emulator import EmulatorClass
from imgate.vendors.base.sandbox_state import SandboxState

# In-flight calls get this long to finish on stop; pauses (latency, hang) end at once.
_SHUTDOWN_TIMEOUT_S = 2.0


def default_emulators() -> tuple[EmulatorClass, ...]:
    """The emulators of the project's vendor registry: each vendor's send API, and its
    recall API where it has one."""
    # Imported when called: the registry imports the emulator modules of this package.
    from imgate.vendors.registry import VENDORS

    return tuple(
        emulator
        for plugin in VENDORS
        for emulator in (plugin.emulator, plugin.recall_emulator)
        if emulator is not None
    )


class SandboxServer:
    """The sandbox app served on `host:port` (port 0 = any free port).

    `async with SandboxServer(config=config) as sandbox:` then use `sandbox.url`,
    `sandbox.vendor_url("tencent")` and `sandbox.state`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        emulators: Sequence[EmulatorClass] | None = None,
    ) -> None:
        chosen = default_emulators() if emulators is None else tuple(emulators)
        self.app = build_app(config or SandboxConfig(), chosen)
        self.state: SandboxState = self.app[STATE_KEY]
        self.host = host
        self._requested_port = port
        self._paths = {e.spec.vendor: e.spec.path for e in chosen if e.api == "send"}
        self._recall_routes = {e.spec.vendor: e.route() for e in chosen if e.api == "recall"}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._port is None:
            raise RuntimeError("the sandbox server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:8080" (a backend's base_url)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def vendor_url(self, vendor: str) -> str:
        """Full URL of a vendor's endpoint."""
        return self.url + self._paths[vendor]

    async def start(self) -> None:
        """Bind and serve."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving; hanging answers are cut short."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def banner(self) -> str:
        """What `imgate sandbox` prints on start: address, endpoints, credentials."""
        lines = [f"imgate vendor sandbox on {self.url} (emulators only; nothing reaches a vendor)"]
        for vendor, path in self._paths.items():
            settings = self.state.vendor(vendor).settings
            credentials = " ".join(f"{k}={v}" for k, v in settings.credentials().items())
            lines.append(f"  {vendor:<10} POST {self.url}{path}")
            if vendor in self._recall_routes:
                method, recall_path = self._recall_routes[vendor]
                lines.append(f"  {'':<10} {method} {self.url}{recall_path} (recall)")
            lines.append(f"  {'':<10} {credentials}")
        lines.append(
            "  control    GET /sandbox/info /sandbox/deliveries /sandbox/withdrawals"
            " /sandbox/stats /sandbox/faults; PUT /sandbox/faults; POST /sandbox/reset"
        )
        scale = self.state.config.time_scale
        if scale != 1.0:
            lines.append(f"  time scale {scale:g}x: rate windows and blocks last 1/{scale:g}")
        missing = self.state.accounts.missing_prefix
        if missing:
            lines.append(f"  accounts   every id exists except those starting with {missing!r}")
        return "\n".join(lines)


async def serve_sandbox(
    host: str,
    port: int,
    config: SandboxConfig | None = None,
    *,
    emulators: Sequence[EmulatorClass] | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve the sandbox until cancelled, printing the address and credentials on start."""
    async with SandboxServer(host, port, config, emulators=emulators) as server:
        print(server.banner(), file=out or sys.stdout, flush=True)
        await asyncio.Event().wait()
