"""Limiter exactness across replicas (tests/_quota_cluster.py) when Redis loses its state:
FLUSHALL mid-run, Redis restarted mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests._quota_cluster import (
    CALLS_PER_VARIANT,
    PAUSE_S,
    Cluster,
    check,
    fresh,
    hammer,
    start_cluster,
    wait_all,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory)


def test_flushall_mid_run(cluster: Cluster) -> None:
    fresh(cluster)
    batches = hammer(cluster, ["a", "b", "c"], "flush", CALLS_PER_VARIANT)
    time.sleep(3)
    flushed = time.time()
    cluster.redis.flush()
    wait_all(cluster, batches)
    check(cluster, "FLUSHALL", [(flushed, flushed + PAUSE_S + 0.5)])
    calls = [at for at, _ in cluster.sandbox.calls()]
    # The pause held: nothing went out from a moment after the flush until it ended.
    assert not [at for at in calls if flushed + 0.5 < at < flushed + PAUSE_S - 0.5]


def test_redis_restarted_mid_run(cluster: Cluster) -> None:
    fresh(cluster)
    batches = hammer(cluster, ["a", "b", "c"], "restart", CALLS_PER_VARIANT)
    time.sleep(3)
    restarted = time.time()
    cluster.redis.restart()
    wait_all(cluster, batches)
    check(cluster, "Redis restarted", [(restarted, restarted + PAUSE_S + 1.0)])
