"""Limiter exactness across replicas (_cluster.py): kill -9 of a replica
mid-call.
"""

from __future__ import annotations

import time

import pytest

from tests.quota_replicas._cluster import (
    CALLS_PER_VARIANT,
    LEASE_S,
    LIMIT,
    VENDOR,
    WINDOW_S,
    Cluster,
    check,
    fresh,
    hammer,
    wait_all,
)

pytestmark = pytest.mark.slow


def test_kill_9_of_a_replica_mid_call(cluster: Cluster) -> None:
    """Last: it costs a replica. Only `c` sends while every answer is slow, so its calls
    are in flight when it is killed; the others then keep to the window its lapsing
    entries still hold, and use the whole quota once they lapsed."""
    fresh(cluster)
    warm = hammer(cluster, ["a", "b"], "before", 2 * LIMIT)
    victim = cluster.replicas["c"].submit(CALLS_PER_VARIANT, "victim")
    wait_all(cluster, warm)
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
    after = hammer(cluster, ["a", "b"], "after", CALLS_PER_VARIANT)
    wait_all(cluster, after)
    assert victim
    check(cluster, "kill -9", [(killed - 0.5, killed + LEASE_S + WINDOW_S + 1.5)])
