"""The parallel workers' order (tests/_schedule.py) names modules that exist: a module
renamed or split would otherwise drop silently to the back of the queue, or out of the
class that keeps timing-sensitive modules apart from CPU-heavy ones."""

from __future__ import annotations

from pathlib import Path

from tests import _schedule

MODULES = {path.stem for path in Path(__file__).parent.rglob("test_*.py")}


def test_every_scheduled_module_exists_once() -> None:
    named = [*_schedule.ORDER]
    assert len(named) == len(set(named))
    assert set(named) <= MODULES, set(named) - MODULES
    assert set(_schedule.HEAVY) | set(_schedule.WAITING) | set(_schedule.TIMING) == set(named)
    light = _schedule.LIGHT_LONGEST
    assert len(light) == len(set(light))
    assert set(light) <= MODULES - set(named), set(light) - (MODULES - set(named))


def test_no_module_is_both_heavy_and_timing_sensitive() -> None:
    assert not set(_schedule.HEAVY) & set(_schedule.TIMING)
    assert not set(_schedule.HEAVY) & set(_schedule.WAITING)
    assert _schedule.cpu_class("test_soak") == "heavy"
    assert _schedule.cpu_class("test_quota_redis") == "timing"
    assert _schedule.cpu_class("test_batches") is None
    assert set(_schedule.CORE_BOUND) <= set(_schedule.HEAVY)
