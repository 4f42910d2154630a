"""Batches that wait: in the store, never in memory (issue 20).

Each backend runs at most `max_running_batches` batches at once in this process (its
slots); the others are stored QUEUED. When a slot frees, the caller with the fewest
batches running for its weight (rule 19) gets it, and the store gives that caller's
oldest batch. Past `max_queued_batches` waiting, a submit is refused before anything is
stored (`Backlogged`). Memory holds the slots' counts and the callers that may have
batches waiting, never the batches.

Counting the waiting batches is a scan of them, so a process counts at most once a
second while under the limit (adding its own submits since) and counts again, exactly,
before it refuses: never a wrong refusal, and one replica never passes the limit. Other
replicas' submits of the last second may pass it by that much (as two replicas' submits
racing for the last place always could).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from imgate.observability.metrics import Metrics
from imgate.pipeline.backend import Backend
from imgate.pipeline.failures import log_failure
from imgate.store.base import Store
from imgate.store.records import BatchRow

log = logging.getLogger("imgate.batches")

BACKLOG_COUNT_FRESH_S = 1.0
"""How long a backend's count of QUEUED batches is trusted (plus this process's own
submits) while it is under `max_queued_batches`."""


class Backlogged(Exception):
    """The backend has `max_queued_batches` waiting: nothing was stored."""


class Slots:
    """One backend's batches running in this process, by caller, and the callers that
    may have batches waiting QUEUED in the store."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: Counter[str] = Counter()
        self.total = 0
        self.waiting: set[str] = set()
        self.filling = False

    @property
    def free(self) -> bool:
        return self.total < self.limit

    def take(self, caller: str, count: int = 1) -> None:
        self.running[caller] += count
        self.total += count

    def give_back(self, caller: str, count: int = 1) -> None:
        if count <= 0:
            return
        self.total -= count
        self.running[caller] -= count
        if self.running[caller] <= 0:
            del self.running[caller]  # keyed by caller: nothing kept for an idle one


def _shares(slots: Slots, weights: Mapping[str, int]) -> Counter[str]:
    """The free slots shared out between the waiting callers as taking them one at a time
    would: each to the caller with the fewest running for its weight (rule 19), then by
    name. Each share is then claimed in one write: one at a time, a backlog's claims
    waited on each other's commits (20,000 queued batches drained in 27 s instead of 14)."""
    running = Counter(slots.running)
    shares: Counter[str] = Counter()
    for _ in range(slots.limit - slots.total):
        caller = min(slots.waiting, key=lambda name: (running[name] / weights.get(name, 1), name))
        running[caller] += 1
        shares[caller] += 1
    return shares


class BatchQueue:
    """The slots of every backend, and the fillers that take queued batches into them."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        store: Store,
        owner: str,
        metrics: Metrics,
        launch: Callable[[BatchRow], object],
        may_run: Callable[[BatchRow], bool],
    ) -> None:
        """`launch(row)` runs a batch claimed from the store in the slot taken for it;
        `may_run(row)` says whether it can run here (not running, backend configured)."""
        self._backends = backends
        self._store = store
        self._owner = owner
        self._metrics = metrics
        self._launch = launch
        self._may_run = may_run
        self._slots = {
            name: Slots(backend.config.max_running_batches) for name, backend in backends.items()
        }
        self._fillers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._backlog: dict[str, tuple[int, float]] = {}
        """Per backend: (QUEUED batches counted + this process's since, when counted)."""

    def slots(self, backend: str) -> Slots:
        return self._slots[backend]

    def tracked(self) -> dict[str, int]:
        """Entries held per caller (0 when nothing runs or waits)."""
        return {
            "slot_callers": sum(len(slots.running) for slots in self._slots.values()),
            "waiting_callers": sum(len(slots.waiting) for slots in self._slots.values()),
        }

    async def check_backlog(self, backend: str) -> None:
        """Raise Backlogged when `backend` has max_queued_batches waiting already."""
        limit = self._backends[backend].config.max_queued_batches
        known = self._backlog.get(backend)
        now = time.monotonic()
        if known is not None and known[0] < limit and now - known[1] < BACKLOG_COUNT_FRESH_S:
            return
        count = await self._store.queued_count(backend)
        self._backlog[backend] = (count, now)
        if count >= limit:
            raise Backlogged(
                f"backend {backend} has {limit} batches waiting (max_queued_batches);"
                " nothing was stored: try again later"
            )

    def queued(self, row: BatchRow) -> None:
        """`row` was stored QUEUED: its caller has a batch waiting."""
        known = self._backlog.get(row.backend)
        if known is not None:
            self._backlog[row.backend] = (known[0] + 1, known[1])
        self.waiting(row.backend, row.caller)

    def waiting(self, backend: str, caller: str) -> None:
        """`caller` has a batch QUEUED on `backend` (stored so, or scheduled and due)."""
        slots = self._slots.get(backend)
        if slots is None:
            log.error("a batch of backend %r is due, but it is no longer configured", backend)
            return
        slots.waiting.add(caller)
        self.fill(backend)  # a slot may have freed meanwhile

    async def find_waiting(self) -> None:
        """Ask the store which callers have batches waiting (at start, after adoption)."""
        for name, slots in self._slots.items():
            slots.waiting |= await self._store.queued_callers(name, self._owner)
            self.fill(name)

    def fill(self, backend: str) -> None:
        """Take waiting batches from the store into the backend's free slots (one filler
        per backend at a time, in a task of its own)."""
        slots = self._slots[backend]
        if slots.filling or not slots.waiting or not slots.free or self._stopping:
            return
        slots.filling = True
        filler = asyncio.create_task(self._fill_slots(backend, slots))
        self._fillers.add(filler)
        filler.add_done_callback(self._fillers.discard)

    def fill_all(self) -> None:
        for name in self._slots:
            self.fill(name)

    async def _fill_slots(self, backend: str, slots: Slots) -> None:
        weights = self._backends[backend].caller_weights
        try:
            while slots.waiting and slots.free and not self._stopping:
                shares = _shares(slots, weights)
                for caller, share in shares.items():
                    slots.take(caller, share)  # held while the store is asked: submits race
                try:
                    claims = await asyncio.gather(
                        *(
                            self._store.claim_queued(backend, caller, self._owner, share)
                            for caller, share in shares.items()
                        ),
                        return_exceptions=True,
                    )
                except BaseException:  # cancelled (stopping)
                    for caller, share in shares.items():
                        slots.give_back(caller, share)
                    raise
                failure: BaseException | None = None
                for (caller, share), claimed in zip(shares.items(), claims, strict=True):
                    if isinstance(claimed, BaseException):
                        slots.give_back(caller, share)
                        failure = failure or claimed
                        continue
                    launched = [row for row in claimed if self._may_run(row)]
                    for row in launched:
                        self._launch(row)
                    slots.give_back(caller, share - len(launched))
                    if len(claimed) < share:
                        slots.waiting.discard(caller)  # none left (until it submits again)
                if failure is not None:
                    raise failure
        except Exception as exc:
            self._metrics.store_errors.labels("queue").inc()
            log_failure(
                log,
                "taking queued batches from the store failed; trying later",
                exc,
                self._store.is_outage,
            )
        finally:
            slots.filling = False

    async def stop(self) -> None:
        self._stopping = True
        for filler in self._fillers:
            filler.cancel()
        await asyncio.gather(*self._fillers, return_exceptions=True)
