"""Fixtures: a sandbox on 127.0.0.1:0 and a client session that calls its vendor paths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from imgate.sandbox import SandboxConfig, SandboxServer

from .helpers import Vendors

StartSandbox = Callable[[SandboxConfig], Awaitable[Vendors]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def start_sandbox(session: aiohttp.ClientSession) -> AsyncIterator[StartSandbox]:
    """Start a sandbox with a given config; stopped at the end of the test."""
    servers: list[SandboxServer] = []

    async def start(config: SandboxConfig) -> Vendors:
        server = SandboxServer(config=config)
        await server.start()
        servers.append(server)
        return Vendors(server, session)

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def vendors(start_sandbox: StartSandbox) -> Vendors:
    """A sandbox with the default configuration (seeded)."""
    return await start_sandbox(SandboxConfig(seed=1))
