"""Limiter exactness across replicas (_cluster.py): Redis restarted mid-run."""

from __future__ import annotations

import time

import pytest

from tests.quota_replicas._cluster import (
    CALLS_PER_VARIANT,
    PAUSE_S,
    Cluster,
    check,
    fresh,
    hammer,
    wait_all,
)

pytestmark = pytest.mark.slow


def test_redis_restarted_mid_run(cluster: Cluster) -> None:
    fresh(cluster)
    batches = hammer(cluster, ["a", "b", "c"], "restart", CALLS_PER_VARIANT)
    time.sleep(3)
    restarted = time.time()
    cluster.redis.restart()
    wait_all(cluster, batches)
    check(cluster, "Redis restarted", [(restarted, restarted + PAUSE_S + 1.0)])
