"""The soak of test_soak.py on PostgreSQL (a module of its own: a worker of its own)."""

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


@pytest.mark.parametrize("store", ["postgres"])
def test_soak_of_small_sends_grows_nothing(
    store: str, fast_sandbox: SandboxProcess, tmp_path: Path
) -> None:
    soak_test(store, fast_sandbox, tmp_path)
