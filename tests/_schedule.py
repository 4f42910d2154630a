"""The order in which parallel workers take the test modules (issue 25: the suite in five
minutes on two cores).

pytest-xdist (`-n 6 --dist loadfile --no-loadscope-reorder` in pyproject.toml) runs each
module in one worker, so its module-scoped fixtures (a Redis, a sandbox process, a cluster
of replicas) start once, and tests that read what earlier ones left (the crash matrix's
summary) see it. The suite needs about 450 CPU seconds, so on two cores the wall time
is the CPU's only if no core idles while work is left. Three kinds of long module:

- TIMING modules assert rates, shares and durations of real processes: they never run
  while a HEAVY one does, nor the other way round (conftest's `_cpu_class`). They go
  first, beside the light modules and the long WAITING ones.
- HEAVY modules use a core or more while they run (soaks, the crash matrix, builds); they
  start as the timing ones end, longest first, alternating with the rest of WAITING.
- WAITING modules are long but mostly wait (scaled time, idle replicas).

The light modules follow in collection order. `ModuleScheduling` hands them out in this
order with one change: a worker takes its next module before its current one ends (xdist
gives a worker more work once two or fewer of its tests are left, and a worker holds its
last test until it knows what comes next). Behind a long module that would hold up
another long one for the whole of the first (the three soaks ran one after the other on
one worker, 250 s); so behind a long module a worker takes a light one.

A new module that takes more than ~20 s goes into HEAVY or WAITING (by its CPU), a new
timing-sensitive one into TIMING.
"""

from __future__ import annotations

import itertools
from pathlib import PurePath

from xdist.scheduler import LoadFileScheduling
from xdist.workermanage import WorkerController

TIMING = (  # longest first, as measured
    "test_quota_replicas",
    "test_quota_replicas_redis_faults",
    "test_quota_replicas_outages",
    "test_quota_redis",
    "test_sqlite_disk",
    "test_fairness",
)
WAITING_BESIDE_TIMING = ("test_lifecycle_processes", "test_batches", "test_replicas")
HEAVY = (
    "test_soak_backlog",
    "test_soak",
    "test_soak_postgres",
    "test_crash_yunxin_v2",
    "test_crash_yunxin_v1",
    "test_crash_tencent",
    "test_docs",
    "test_audience",
    "test_watch_memory",
    "test_polyglot",
    "test_process",
    "test_fuzz",
    "test_memory_bounds",
    "test_fidelity",
)
WAITING = (
    *WAITING_BESIDE_TIMING,
    "test_webhooks_processes",
    "test_pauses",
    "test_clock_jumps",
    "test_quota_and_faults",
    "test_send_command",
    "test_console_browser",
    "test_recall",
    "test_cli_help",
    "test_health",
)
ORDER = (
    *TIMING,
    *WAITING_BESIDE_TIMING,
    *(
        name
        for pair in itertools.zip_longest(HEAVY, WAITING[len(WAITING_BESIDE_TIMING) :])
        for name in pair
        if name is not None
    ),
)
"""The long modules, in the order workers take them; the light ones come after."""


def rank(module: str) -> int:
    """Where a module (by its name) comes in the order."""
    return ORDER.index(module) if module in ORDER else len(ORDER)


def cpu_class(module: str) -> str | None:
    """ "timing", "heavy" or None (light or waiting)."""
    return "timing" if module in TIMING else "heavy" if module in HEAVY else None


def _module(scope: str) -> str:
    return PurePath(scope).stem  # a loadfile scope is the module's path


class ModuleScheduling(LoadFileScheduling):
    """xdist's loadfile scheduling, but behind a long module a worker's next is light."""

    def _assign_work_unit(self, node: WorkerController) -> None:
        behind_long = any(
            _module(scope) in ORDER and not all(tests.values())
            for scope, tests in self.assigned_work.get(node, {}).items()
        )
        if behind_long:
            light = next((s for s in self.workqueue if _module(s) not in ORDER), None)
            if light is not None:
                self.workqueue.move_to_end(light, last=False)
        super()._assign_work_unit(node)
