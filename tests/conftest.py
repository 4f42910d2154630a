"""Shared fixtures: the sandbox emulators and a real gateway on loopback port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from imgate.api.server import Gateway
from imgate.config.load import sandbox_config
from imgate.config.model import GatewayConfig
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.store.base import Store
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.registry import BY_VENDOR
from imgate.vendors.registry import VENDORS as PLUGINS
from tests import _schedule

# Bytecode. Where the environment says not to write it (PYTHONDONTWRITEBYTECODE, as on this
# project's machines), every process the suite starts (gateways, sandboxes, CLI runs:
# hundreds) compiled imgate from source, and every xdist worker rewrote and compiled the
# test modules anew: 0.1 s of CPU per gateway start, 3 s per worker. The suite's
# processes write it as Python does by default, in __pycache__ beside the sources (git and
# the Docker context ignore it; the installed packages' own is used as it is). Set here,
# before the workers start.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    sys.dont_write_bytecode = False

VENDORS = tuple(plugin.vendor for plugin in PLUGINS)
"""Every registered vendor: sandbox mode names one backend after each, so these are
backend names too. Shared suites parametrize over it; a new vendor joins them all."""


def spec_of(backend: str) -> VendorSpec:
    """The spec of a sandbox-mode backend (named after its vendor)."""
    return BY_VENDOR[backend].spec


@pytest.fixture
def sandbox_config_override() -> SandboxConfig:
    """Tests override this fixture to make the sandbox stricter or faulty."""
    return SandboxConfig(seed=1)


@pytest.fixture
async def sandbox(sandbox_config_override: SandboxConfig) -> AsyncIterator[SandboxServer]:
    async with SandboxServer(config=sandbox_config_override) as server:
        yield server


@dataclasses.dataclass
class RunningGateway:
    gateway: Gateway
    channel: grpc.aio.Channel
    stub: pb_grpc.GatewayServiceStub
    target: str

    async def send(
        self,
        request: pb.BatchSendRequest,
        timeout: float | None = 60,  # noqa: ASYNC109 - the gRPC deadline
    ) -> tuple[list[pb.BatchSendResponse], list[pb.RecipientOutcome], pb.BatchSummary]:
        """Run BatchSend to the end: (messages, outcomes, summary)."""
        messages = [m async for m in self.stub.BatchSend(request, timeout=timeout)]
        outcomes = [o for m in messages for o in m.outcomes]
        assert messages[-1].HasField("summary")
        assert all(not m.HasField("summary") for m in messages[:-1])
        return messages, outcomes, messages[-1].summary


StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway(sandbox: SandboxServer) -> AsyncIterator[StartGateway]:
    """Start gateways against the sandbox; `backend_overrides` change every backend."""
    running: list[RunningGateway] = []

    async def start(
        backend_overrides: dict[str, Any] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        **top: Any,
    ) -> RunningGateway:
        config: GatewayConfig = sandbox_config(sandbox.url, "127.0.0.1:0")
        backends = tuple(
            dataclasses.replace(b, **(backend_overrides or {})) for b in config.backends
        )
        config = dataclasses.replace(config, backends=backends, **top)
        gateway = Gateway(config, store=store, clock=clock)
        port = await gateway.start()
        target = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(target)
        item = RunningGateway(gateway, channel, pb_grpc.GatewayServiceStub(channel), target)
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.gateway.stop(grace_s=1)


def text_request(
    recipients: list[str], backend: str, text: str = "hello", **fields: Any
) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        backend=backend,
        sender_id=fields.pop("sender_id", "imgate_sender"),
        recipient_ids=recipients,
        message=pb.Message(text=pb.TextContent(text=text)),
        **fields,
    )


# Parallel workers: tests/_schedule.py says in which order they take the modules, and
# `_cpu_class` below keeps the timing-sensitive ones apart from the CPU-heavy ones. Modules
# that write gen/ (scripts/build_polyglot.sh, the README's protoc block) take `gen_lock()`
# around what they build and run.
def _module_name(item: pytest.Item) -> str:
    return item.module.__name__.rpartition(".")[2] if item.module else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _schedule.rank(_module_name(item)))  # stable


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and workerinput["workerid"] != _schedule.CORE_WORKER:
        os.nice(_schedule.OTHERS_NICE)  # the core-bound chain first (tests/_schedule.py)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> _schedule.ModuleScheduling:
    return _schedule.ModuleScheduling(config, log)


def _session_dir(factory: pytest.TempPathFactory) -> Path:
    # Shared by the workers of one run (popen-gwN's parent), never by two runs.
    base = factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a") as file:
        fcntl.flock(file, mode)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


_GEN_LOCK: list[Path] = []


def gen_lock() -> contextlib.AbstractContextManager[None]:
    """Held while gen/ is built or its programs run (one at a time across workers)."""
    return _flock(_GEN_LOCK[0], fcntl.LOCK_EX)


@pytest.fixture(scope="session", autouse=True)
def _shared_locks(tmp_path_factory: pytest.TempPathFactory) -> None:
    _GEN_LOCK[:] = [_session_dir(tmp_path_factory) / "gen.lock"]


@pytest.fixture(scope="module", autouse=True)
def _cpu_class(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Heavy and timing modules never overlap, and one core-bound module runs at a time: a
    count per class in a file the workers share, changed under a lock; a module enters
    when no module of the other class runs (and, if core-bound, no other core-bound one).
    The schedule (tests/_schedule.py) avoids the waits; this makes sure of the rule."""
    name = request.module.__name__.rpartition(".")[2]
    mine = _schedule.cpu_class(name)
    if mine is None:
        yield
        return
    other = "heavy" if mine == "timing" else "timing"
    core_bound = name in _schedule.CORE_BOUND
    classes = [mine, "core"] if core_bound else [mine]
    counts_file = _session_dir(tmp_path_factory) / "cpu-classes.json"
    lock = counts_file.with_suffix(".lock")

    def change(delta: int) -> bool:
        with _flock(lock, fcntl.LOCK_EX):
            counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
            if delta > 0 and (counts.get(other, 0) or (core_bound and counts.get("core", 0))):
                return False
            for cls in classes:
                counts[cls] = counts.get(cls, 0) + delta
            counts_file.write_text(json.dumps(counts))
            return True

    while not change(+1):
        time.sleep(0.2)
    try:
        yield
    finally:
        change(-1)
