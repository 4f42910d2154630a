"""The cluster fixture of the shared-quota modules: one cluster per module (a module that
sets `SKEWED_REPLICA = True` gets the replica whose clock is 0.5 s ahead)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.quota_replicas._cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory, getattr(request.module, "SKEWED_REPLICA", False))
