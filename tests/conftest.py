"""Shared fixtures: the sandbox emulators and a real gateway on loopback port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from imgate.api.server import Gateway
from imgate.config.load import GatewayConfig, sandbox_config
from imgate.sandbox import SandboxConfig, SandboxServer
from imgate.store.base import Store
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

VENDORS = ("yunxin_v1", "yunxin_v2", "tencent")


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


# Parallel workers (pytest-xdist; `-n 3 --dist loadfile` in pyproject.toml): each test
# module runs in one worker, so its module-scoped fixtures (a Redis, a sandbox process, a
# cluster of replicas) start once and tests that read what earlier ones left (the crash
# matrix's summary) see it. Three rules keep the wall time short and the timing tests
# honest (issue 25):
# - Longest first: xdist hands out modules in collection order, so the long ones (as
#   measured) come first and start at once instead of last.
# - TIMING modules assert rates, shares and durations of real processes; they never run
#   while a CPU_HEAVY module does (a lock file shared by the workers: heavy modules hold
#   it shared, timing ones exclusive). They come after the heavy ones, light modules fill
#   the gaps.
# - Modules that write gen/ (scripts/build_polyglot.sh, the README's protoc block) take
#   `gen_lock()` around what they build and run.
_LONGEST_FIRST = (
    "test_soak_backlog",
    "test_crash",
    "test_soak",
    "test_soak_postgres",
    "test_docs",
    "test_audience",
    "test_polyglot",
    "test_replicas",
    "test_batches",
    "test_fuzz",
    "test_watch_memory",
    "test_process",
)
CPU_HEAVY = frozenset(_LONGEST_FIRST) | {"test_memory_bounds", "test_fidelity"}
TIMING = ("test_quota_replicas", "test_quota_redis", "test_sqlite_disk", "test_fairness")
_LOCKS = Path(tempfile.gettempdir()) / (
    "imgate-tests-" + hashlib.sha256(str(Path(__file__).resolve()).encode()).hexdigest()[:12]
)


def _module_name(item: pytest.Item) -> str:
    return item.module.__name__.rpartition(".")[2] if item.module else ""


def _rank(item: pytest.Item) -> int:
    name = _module_name(item)
    if name in _LONGEST_FIRST:
        return _LONGEST_FIRST.index(name)
    if name in TIMING:
        return len(_LONGEST_FIRST) + TIMING.index(name)
    return len(_LONGEST_FIRST) + len(TIMING)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each module's tests keep their order


@contextlib.contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    _LOCKS.mkdir(exist_ok=True)
    with open(_LOCKS / name, "a") as file:
        fcntl.flock(file, mode)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def gen_lock() -> contextlib.AbstractContextManager[None]:
    """Held while gen/ is built or its programs run (one writer at a time across workers)."""
    return _flock("gen.lock", fcntl.LOCK_EX)


@pytest.fixture(scope="module", autouse=True)
def _cpu_share(request: pytest.FixtureRequest) -> Iterator[None]:
    name = request.module.__name__.rpartition(".")[2]
    if name in TIMING:
        with _flock("cpu.lock", fcntl.LOCK_EX):
            yield
    elif name in CPU_HEAVY:
        with _flock("cpu.lock", fcntl.LOCK_SH):
            yield
    else:
        yield
