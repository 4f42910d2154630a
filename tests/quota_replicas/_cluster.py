"""The cluster of test_quota_replicas*.py: real `imgate serve` processes sharing one Redis.

One Yunxin legacy app (it counts calls and blocks the app after the 21st here), with its
window scaled from 60 s to 2 s, is hammered by three or four gateway processes (each its
own memory store, all the same `[quota] url`), the vendor being the sandbox in a process
of its own and Redis a `redis-server` of the module. Variants: plain; kill -9 of a
replica mid-call; one replica's clock 0.5 s ahead (libfaketime); FLUSHALL mid-run; Redis
restarted mid-run; vendor latency faults; Redis down (nothing sent) and back. Each:
no vendor rate refusal, at most the limit in any window (the sandbox's own peak, counted
at arrival), and, while work is queued and outside the deliberate pauses, the quota used
at >= 0.95 of the limit (from the sandbox's delivery log).

The variants are split over five modules, each its own cluster (conftest.py), so that
parallel workers run them side by side while nothing CPU-heavy may run (issue 25).
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imgate.quota.redis import LEASE_MARGIN_S
from imgate.v1 import gateway_pb2 as pb
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess
from tests._redis import RedisServer

VENDOR = "yunxin_v1"
LIMIT = 20  # calls ...
WINDOW_S = 2.0  # ... in any window of this many seconds (Yunxin: 120 / 60 s)
BLOCK_S = 2.0
PER_CALL = 10  # recipients per call
REQUEST_TIMEOUT_S = 2.0
LEASE_S = REQUEST_TIMEOUT_S + LEASE_MARGIN_S
PAUSE_S = WINDOW_S + LEASE_S  # after Redis lost its state
CALLS_PER_VARIANT = 90  # four and a half windows of sending


def faketime_library() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


class QuotaSandbox(SandboxProcess):
    """The sandbox with the one vendor's windows scaled to seconds."""

    def __init__(self) -> None:
        super().__init__(
            {VENDOR: {"call_limit": LIMIT, "call_window_s": WINDOW_S, "block_s": BLOCK_S}}
        )

    def stats(self, vendor: str = VENDOR) -> dict[str, Any]:
        return super().stats(vendor)

    def calls(self) -> list[tuple[float, str]]:
        """(first delivery time, sender) of every processed call since the last reset."""
        first: dict[int, tuple[float, str]] = {}
        for delivery in self.deliveries(VENDOR):
            seen = first.get(delivery["call_id"])
            if seen is None or delivery["time"] < seen[0]:
                first[delivery["call_id"]] = (delivery["time"], delivery["sender"])
        return sorted(first.values())


class Replica(GatewayProcess):
    """`imgate serve` with a memory store and the shared `[quota] url`."""

    def __init__(self, name: str, sandbox: QuotaSandbox, redis_url: str, workdir: Path) -> None:
        config = workdir / f"{name}.toml"
        config.write_text(
            # lease_s no longer than the in-flight lease: a lost state pauses PAUSE_S.
            f'[store]\nurl = "memory"\nlease_s = {LEASE_S}\n'
            f'[quota]\nurl = "{redis_url}"\nkey_prefix = "replicas"\n'
            f'[backends.yx]\nvendor = "{VENDOR}"\nbase_url = "{sandbox.url}"\n'
            f"{SANDBOX_CREDENTIALS[VENDOR]}"
            f"recipients_per_call = {PER_CALL}\ncall_limit = {LIMIT}\n"
            f"call_window_s = {WINDOW_S}\nblock_s = {BLOCK_S}\n"
            f"request_timeout_s = {REQUEST_TIMEOUT_S}\nmax_in_flight = 8\n"
        )
        env = {}
        if name == "skewed":
            library = faketime_library()
            assert library is not None
            # Its wall clock 0.5 s ahead; monotonic time runs as everyone's.
            env = {"LD_PRELOAD": library, "FAKETIME": "+0.5", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        super().__init__(name, config, workdir / f"{name}.log", env)

    def submit(self, calls: int, tag: str) -> str:
        request = pb.SubmitBatchRequest(
            backend="yx",
            sender_id=f"{self.name}_{tag}",
            recipient_ids=[f"{self.name}_{tag}_{n:05d}" for n in range(calls * PER_CALL)],
            message=pb.Message(text=pb.TextContent(text="replicas")),
        )
        return str(self.stub.SubmitBatch(request, timeout=30).batch_id)

    def wait_done(self, batch_id: str, timeout_s: float = 60) -> pb.Batch:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)
            if batch.state == pb.BATCH_STATE_DONE:
                return batch
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: batch {batch_id} did not reach DONE")


@dataclass
class Cluster:
    sandbox: QuotaSandbox
    redis: RedisServer
    replicas: dict[str, Replica]
    results: list[str] = field(default_factory=list)


def start_cluster(
    tmp_path_factory: pytest.TempPathFactory, skewed: bool = False
) -> Iterator[Cluster]:
    """A module's cluster (conftest.py's fixture yields from this); `skewed` adds the
    replica whose clock is 0.5 s ahead, where libfaketime is installed."""
    redis = RedisServer()
    sandbox = QuotaSandbox()
    workdir = tmp_path_factory.mktemp("replicas")
    names = ["a", "b", "c"]
    if skewed and faketime_library() is not None:
        names.append("skewed")
    replicas = {name: Replica(name, sandbox, redis.url, workdir) for name in names}
    try:
        for replica in replicas.values():
            replica.wait_serving()
        yield Cluster(sandbox, redis, replicas)
    finally:
        for replica in replicas.values():
            if replica.process.poll() is None:
                replica.stop()
        sandbox.stop()
        redis.stop()


def fresh(cluster: Cluster) -> None:
    """A new variant: the sandbox's counters cleared, and one window with nothing sent, so
    that the variant's first window starts empty (as the judged pace assumes)."""
    time.sleep(WINDOW_S + 0.2)
    cluster.sandbox.reset()


def hammer(cluster: Cluster, names: list[str], tag: str, calls: int) -> list[tuple[str, str]]:
    """Submit `calls` calls' worth of recipients split over the named replicas."""
    share = calls // len(names)
    return [(name, cluster.replicas[name].submit(share, tag)) for name in names]


def wait_all(cluster: Cluster, batches: list[tuple[str, str]]) -> None:
    for name, batch_id in batches:
        batch = cluster.replicas[name].wait_done(batch_id)
        assert batch.accepted == batch.total, (name, batch)


def utilization(calls: list[float], excluded: list[tuple[float, float]]) -> float:
    """How close the sending came to the limit: the window ÷ the mean time between each
    call and the one LIMIT calls after it (a full quota sends call i + LIMIT exactly one
    window after call i), over the stretches of steady sending.

    Arrivals inside `excluded` (deliberate pauses) are dropped and the timeline is cut
    there and at any gap longer than a window (the queue ran dry).
    """
    stretches: list[list[float]] = [[]]
    for at in calls:
        if any(start <= at < end for start, end in excluded):
            if stretches[-1]:
                stretches.append([])
            continue
        if stretches[-1] and at - stretches[-1][-1] > WINDOW_S:
            stretches.append([])
        stretches[-1].append(at)
    pairs, spanned = 0, 0.0
    for stretch in stretches:
        for first, later in zip(stretch, stretch[LIMIT:], strict=False):
            pairs += 1
            spanned += later - first
    assert pairs >= LIMIT, "too little steady sending to judge"
    return pairs * WINDOW_S / spanned


def check(
    cluster: Cluster, variant: str, excluded: list[tuple[float, float]] | None = None
) -> None:
    stats = cluster.sandbox.stats()
    calls = [at for at, _ in cluster.sandbox.calls()]
    used = utilization(calls, excluded or [])
    cluster.results.append(
        f"{variant}: {len(calls)} calls, refusals {stats['refusals']}, peak"
        f" {stats['peak_calls_in_window']}/{LIMIT}, quota used {used:.3f}"
    )
    print(cluster.results[-1])
    assert stats["refusals"] == {}, variant
    assert stats["peak_calls_in_window"] <= LIMIT, variant
    assert used >= 0.95, variant
