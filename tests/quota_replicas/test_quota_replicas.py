"""Limiter exactness across replicas (_cluster.py): plain, and one replica's clock
0.5 s ahead (libfaketime).

One variant or two per module, each module its own cluster: parallel workers run them
side by side while nothing CPU-heavy may run (tests/_schedule.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.quota_replicas._cluster import (
    CALLS_PER_VARIANT,
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
    yield from start_cluster(tmp_path_factory, skewed=True)


def test_plain(cluster: Cluster) -> None:
    fresh(cluster)
    batches = hammer(cluster, ["a", "b", "c"], "plain", CALLS_PER_VARIANT)
    wait_all(cluster, batches)
    check(cluster, "plain")


def test_one_replica_clock_half_a_second_ahead(cluster: Cluster) -> None:
    if "skewed" not in cluster.replicas:
        message = "libfaketime is not installed (Debian: apt-get install faketime)"
        if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    fresh(cluster)
    batches = hammer(cluster, ["a", "b", "skewed"], "skew", CALLS_PER_VARIANT)
    wait_all(cluster, batches)
    check(cluster, "skewed clock")
