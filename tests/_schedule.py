"""The order in which parallel workers take the test modules (issue 25: the suite in five
minutes on two cores).

pytest-xdist (`-n 6 --dist loadfile --no-loadscope-reorder` in pyproject.toml) runs each
module in one worker, so its module-scoped fixtures (a Redis, a sandbox process, a cluster
of replicas) start once, and tests that read what earlier ones left (the crash matrix's
summary) see it. The suite needs about 400 CPU seconds, so on two cores the wall time
is the CPU's only if no core idles while work is left. Three kinds of long module:

- TIMING modules assert rates, shares and durations of real processes: they never run
  while a HEAVY one does, nor the other way round (conftest's `_cpu_class`). They go
  first, beside the light modules and the long WAITING ones.
- HEAVY modules use much CPU while they run (soaks, the crash matrix, builds); they start
  as the timing ones end, alternating with the rest of WAITING. The CORE_BOUND ones among
  them (a gateway serving as fast as it can, and the client feeding it) keep a core and
  more busy on their own: they run one at a time, on CORE_WORKER, the others' processes
  at a lower priority (with two or three at once, each took up to 75 % more CPU seconds
  and the suite took 324 s and 347 s instead of 317 s; with the priority, 290 s).
- WAITING modules are long but mostly wait (scaled time, idle replicas).

The light modules follow, the longer ones first. `ModuleScheduling` hands them out in this
order with two changes. A worker takes its next module before its current one ends (xdist
gives a worker more work once two or fewer of its tests are left, and a worker holds its
last test until it knows what comes next); behind a long module that would hold up
another long one for the whole of the first (the three soaks ran one after the other on
one worker, 250 s), so behind a long module a worker takes a light one. The timing
modules go first on every worker, CORE_BOUND modules to CORE_WORKER only.

A new module that takes more than ~20 s goes into HEAVY or WAITING (by its CPU), a new
timing-sensitive one into TIMING.
"""

from __future__ import annotations

import itertools
from pathlib import PurePath

from xdist.scheduler import LoadFileScheduling
from xdist.workermanage import WorkerController

TIMING = (
    # xdist gives each of the six workers one module, then (in the same order) a second
    # one: the first and second pair up with the seventh and eighth, the short ones.
    "test_quota_replicas_flushall",
    "test_quota_replicas_redis_restart",
    "test_quota_replicas",
    "test_quota_replicas_slow_or_down",
    "test_quota_redis",
    "test_quota_replicas_kill",
    "test_sqlite_disk",
    "test_fairness",
)
WAITING_BESIDE_TIMING = ("test_lifecycle_processes", "test_batches", "test_replicas")
CORE_BOUND = ("test_soak_backlog", "test_soak", "test_soak_postgres", "test_audience")
CORE_WORKER = "gw0"
"""The worker that runs the CORE_BOUND modules, one after the other: they are the longest
chain of the run. The others run at a lower priority (OTHERS_NICE), so that the chain
gets the CPU it asks for and they take what is left."""
OTHERS_NICE = 5
HEAVY = (  # the core-bound ones in their order; the others longest first
    "test_soak_backlog",
    "test_docs",
    "test_soak",
    "test_crash_yunxin_v2",
    "test_soak_postgres",
    "test_crash_yunxin_v1",
    "test_audience",
    "test_crash_tencent",
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
LIGHT_LONGEST = (
    "test_kubernetes",
    "test_store_postgres",
    "test_store",
    "test_steady_traffic",
    "test_hostile_input",
    "test_webhooks",
    "test_recipient_lists",
    "test_api",
)
"""The light modules of 5-15 s, longest first: they go before the other light ones, so
that workers take them behind the long modules. Left to collection order, they came
last, and a worker ran one for 11 s after every other module had ended."""


def rank(module: str) -> int:
    """Where a module (by its name) comes in the order."""
    if module in ORDER:
        return ORDER.index(module)
    if module in LIGHT_LONGEST:
        return len(ORDER) + LIGHT_LONGEST.index(module)
    return len(ORDER) + len(LIGHT_LONGEST)


def cpu_class(module: str) -> str | None:
    """The module's class: "timing", "heavy" or None (light or waiting)."""
    return "timing" if module in TIMING else "heavy" if module in HEAVY else None


def _module(scope: str) -> str:
    return PurePath(scope).stem  # a loadfile scope is the module's path


class ModuleScheduling(LoadFileScheduling):
    """xdist's loadfile scheduling in ORDER, but the CORE_BOUND modules go to CORE_WORKER
    only, and behind a long module a worker's next is light."""

    def _assign_work_unit(self, node: WorkerController) -> None:
        queue = list(self.workqueue)
        timing = [scope for scope in queue if _module(scope) in TIMING]
        mine = [
            _module(scope)
            for scope, tests in self.assigned_work.get(node, {}).items()
            if not all(tests.values())
        ]
        core = [scope for scope in queue if _module(scope) in CORE_BOUND]
        light = [scope for scope in queue if _module(scope) not in ORDER]
        others = [scope for scope in queue if _module(scope) not in CORE_BOUND]
        if timing:  # first, on every worker: nothing heavy may start before they end
            chosen = timing
        elif node.gateway.id == CORE_WORKER:
            # The chain's next module (it waits in `_cpu_class` for the timing ones to end)
            chosen = core or light or others
        elif any(m in ORDER for m in mine):  # behind a long module, a light one
            chosen = light or others
        else:
            chosen = others
        if chosen:  # else the head: conftest's `_cpu_class` keeps the rules
            self.workqueue.move_to_end(chosen[0], last=False)
        super()._assign_work_unit(node)
