"""Limiter exactness across replicas (_cluster.py): the vendor slow (latency
faults), Redis down (nothing sent) and back.
"""

from __future__ import annotations

import time

import pytest

from tests.quota_replicas._cluster import (
    CALLS_PER_VARIANT,
    LIMIT,
    VENDOR,
    Cluster,
    check,
    fresh,
    hammer,
    wait_all,
)

pytestmark = pytest.mark.slow


def test_vendor_latency_faults(cluster: Cluster) -> None:
    fresh(cluster)
    cluster.sandbox.set_faults({VENDOR: [{"kind": "latency", "delay_s": 0.05, "probability": 0.5}]})
    try:
        batches = hammer(cluster, ["a", "b", "c"], "latency", CALLS_PER_VARIANT)
        wait_all(cluster, batches)
    finally:
        cluster.sandbox.set_faults({VENDOR: []})
    check(cluster, "latency faults")


def test_redis_down_sends_nothing_until_it_is_back(cluster: Cluster) -> None:
    fresh(cluster)
    cluster.redis.stop()
    try:
        batches = hammer(cluster, ["a", "b"], "down", LIMIT * 2)
        time.sleep(2.0)
        assert cluster.sandbox.stats()["calls_received"] == 0
    finally:
        cluster.redis.start()
    wait_all(cluster, batches)
    assert cluster.sandbox.stats()["calls_processed"] == LIMIT * 2
    assert cluster.sandbox.stats()["refusals"] == {}
    assert "unreachable" in cluster.replicas["a"].log_path.read_text()
