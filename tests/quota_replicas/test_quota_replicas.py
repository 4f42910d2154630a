"""Limiter exactness across replicas (_cluster.py): plain, and one replica's clock
0.5 s ahead (libfaketime).
"""

from __future__ import annotations

import os

import pytest

from tests.quota_replicas._cluster import (
    CALLS_PER_VARIANT,
    Cluster,
    check,
    fresh,
    hammer,
    wait_all,
)

pytestmark = pytest.mark.slow
SKEWED_REPLICA = True  # the cluster (conftest.py) adds the replica 0.5 s ahead


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
