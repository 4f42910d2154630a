"""Limiter exactness across replicas (_cluster.py): Redis flushed (FLUSHALL)
mid-run.

One variant or two per module, each module its own cluster: parallel workers run them
side by side while nothing CPU-heavy may run (tests/_schedule.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.quota_replicas._cluster import (
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
