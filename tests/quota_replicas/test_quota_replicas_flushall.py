"""Limiter exactness across replicas (_cluster.py): Redis flushed (FLUSHALL)
mid-run.
"""

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
