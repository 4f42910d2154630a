"""Limiter exactness across replicas: real `imgate serve` processes sharing one Redis.

One Yunxin legacy app (it counts calls and blocks the app after the 21st here), with its
window scaled from 60 s to 2 s, is hammered by three or four gateway processes (each its
own memory store, all the same `[quota] url`), the vendor being the sandbox in a process
of its own and Redis a `redis-server` of this module. Variants: plain; kill -9 of a
replica mid-call; one replica's clock 0.5 s ahead (libfaketime); FLUSHALL mid-run; Redis
restarted mid-run; vendor latency faults; Redis down (nothing sent) and back. Each:
no vendor rate refusal, at most the limit in any window (the sandbox's own peak, counted
at arrival), and, while work is queued and outside the deliberate pauses, the quota used
at >= 0.95 of the limit (from the sandbox's delivery log).
"""

from __future__ import annotations

import glob
import os
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

pytestmark = pytest.mark.slow

VENDOR = "yunxin_v1"
LIMIT = 20  # calls ...
WINDOW_S = 2.0  # ... in any window of this many seconds (Yunxin: 120 / 60 s)
BLOCK_S = 2.0
PER_CALL = 10  # recipients per call
REQUEST_TIMEOUT_S = 2.0
LEASE_S = REQUEST_TIMEOUT_S + LEASE_MARGIN_S
PAUSE_S = WINDOW_S + LEASE_S  # after Redis lost its state
CALLS_PER_VARIANT = 90  # four and a half windows of sending


def _faketime_library() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


class _Sandbox(SandboxProcess):
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


class _Replica(GatewayProcess):
    """`imgate serve` with a memory store and the shared `[quota] url`."""

    def __init__(self, name: str, sandbox: _Sandbox, redis_url: str, workdir: Path) -> None:
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
            library = _faketime_library()
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
class _Cluster:
    sandbox: _Sandbox
    redis: RedisServer
    replicas: dict[str, _Replica]
    results: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    redis = RedisServer()
    sandbox = _Sandbox()
    workdir = tmp_path_factory.mktemp("replicas")
    names = ["a", "b", "c"]
    if _faketime_library() is not None:
        names.append("skewed")
    replicas = {name: _Replica(name, sandbox, redis.url, workdir) for name in names}
    try:
        for replica in replicas.values():
            replica.wait_serving()
        yield _Cluster(sandbox, redis, replicas)
    finally:
        for replica in replicas.values():
            if replica.process.poll() is None:
                replica.stop()
        sandbox.stop()
        redis.stop()


def _fresh(cluster: _Cluster) -> None:
    """A new variant: the sandbox's counters cleared, and one window with nothing sent, so
    that the variant's first window starts empty (as the judged pace assumes)."""
    time.sleep(WINDOW_S + 0.2)
    cluster.sandbox.reset()


def _hammer(cluster: _Cluster, names: list[str], tag: str, calls: int) -> list[tuple[str, str]]:
    """Submit `calls` calls' worth of recipients split over the named replicas."""
    share = calls // len(names)
    return [(name, cluster.replicas[name].submit(share, tag)) for name in names]


def _wait_all(cluster: _Cluster, batches: list[tuple[str, str]]) -> None:
    for name, batch_id in batches:
        batch = cluster.replicas[name].wait_done(batch_id)
        assert batch.accepted == batch.total, (name, batch)


def _utilization(calls: list[float], excluded: list[tuple[float, float]]) -> float:
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


def _check(
    cluster: _Cluster, variant: str, excluded: list[tuple[float, float]] | None = None
) -> None:
    stats = cluster.sandbox.stats()
    calls = [at for at, _ in cluster.sandbox.calls()]
    used = _utilization(calls, excluded or [])
    cluster.results.append(
        f"{variant}: {len(calls)} calls, refusals {stats['refusals']}, peak"
        f" {stats['peak_calls_in_window']}/{LIMIT}, quota used {used:.3f}"
    )
    print(cluster.results[-1])
    assert stats["refusals"] == {}, variant
    assert stats["peak_calls_in_window"] <= LIMIT, variant
    assert used >= 0.95, variant


def test_plain(cluster: _Cluster) -> None:
    _fresh(cluster)
    batches = _hammer(cluster, ["a", "b", "c"], "plain", CALLS_PER_VARIANT)
    _wait_all(cluster, batches)
    _check(cluster, "plain")


def test_one_replica_clock_half_a_second_ahead(cluster: _Cluster) -> None:
    if "skewed" not in cluster.replicas:
        message = "libfaketime is not installed (Debian: apt-get install faketime)"
        if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    _fresh(cluster)
    batches = _hammer(cluster, ["a", "b", "skewed"], "skew", CALLS_PER_VARIANT)
    _wait_all(cluster, batches)
    _check(cluster, "skewed clock")


def test_vendor_latency_faults(cluster: _Cluster) -> None:
    _fresh(cluster)
    cluster.sandbox.set_faults({VENDOR: [{"kind": "latency", "delay_s": 0.05, "probability": 0.5}]})
    try:
        batches = _hammer(cluster, ["a", "b", "c"], "latency", CALLS_PER_VARIANT)
        _wait_all(cluster, batches)
    finally:
        cluster.sandbox.set_faults({VENDOR: []})
    _check(cluster, "latency faults")


def test_flushall_mid_run(cluster: _Cluster) -> None:
    _fresh(cluster)
    batches = _hammer(cluster, ["a", "b", "c"], "flush", CALLS_PER_VARIANT)
    time.sleep(3)
    flushed = time.time()
    cluster.redis.flush()
    _wait_all(cluster, batches)
    _check(cluster, "FLUSHALL", [(flushed, flushed + PAUSE_S + 0.5)])
    calls = [at for at, _ in cluster.sandbox.calls()]
    # The pause held: nothing went out from a moment after the flush until it ended.
    assert not [at for at in calls if flushed + 0.5 < at < flushed + PAUSE_S - 0.5]


def test_redis_restarted_mid_run(cluster: _Cluster) -> None:
    _fresh(cluster)
    batches = _hammer(cluster, ["a", "b", "c"], "restart", CALLS_PER_VARIANT)
    time.sleep(3)
    restarted = time.time()
    cluster.redis.restart()
    _wait_all(cluster, batches)
    _check(cluster, "Redis restarted", [(restarted, restarted + PAUSE_S + 1.0)])


def test_redis_down_sends_nothing_until_it_is_back(cluster: _Cluster) -> None:
    _fresh(cluster)
    cluster.redis.stop()
    try:
        batches = _hammer(cluster, ["a", "b"], "down", LIMIT * 2)
        time.sleep(2.0)
        assert cluster.sandbox.stats()["calls_received"] == 0
    finally:
        cluster.redis.start()
    _wait_all(cluster, batches)
    assert cluster.sandbox.stats()["calls_processed"] == LIMIT * 2
    assert cluster.sandbox.stats()["refusals"] == {}
    assert "unreachable" in cluster.replicas["a"].log_path.read_text()


def test_kill_9_of_a_replica_mid_call(cluster: _Cluster) -> None:
    """Last: it costs a replica. Only `c` sends while every answer is slow, so its calls
    are in flight when it is killed; the others then keep to the window its lapsing
    entries still hold, and use the whole quota once they lapsed."""
    _fresh(cluster)
    warm = _hammer(cluster, ["a", "b"], "before", 2 * LIMIT)
    victim = cluster.replicas["c"].submit(CALLS_PER_VARIANT, "victim")
    _wait_all(cluster, warm)
    cluster.sandbox.set_faults({VENDOR: [{"kind": "latency", "delay_s": 1.5}]})
    # Only `c` has work left; its calls go out in bursts as slots free (at most a window
    # apart). Once one of them is held up by the slow answer, the kill lands mid-call.
    deadline = time.monotonic() + 2 * WINDOW_S + 1
    in_flight = 0
    while not in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
        in_flight = cluster.sandbox.stats()["faults_applied"].get("latency", 0)
    time.sleep(0.1)
    killed = time.time()
    cluster.replicas["c"].kill()
    cluster.sandbox.set_faults({VENDOR: []})
    assert in_flight >= 1
    after = _hammer(cluster, ["a", "b"], "after", CALLS_PER_VARIANT)
    _wait_all(cluster, after)
    assert victim
    _check(cluster, "kill -9", [(killed - 0.5, killed + LEASE_S + WINDOW_S + 1.5)])
