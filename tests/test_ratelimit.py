"""The quota limiter: sliding windows that hold for the vendor whatever the latency."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from imgate.quota.limiter import BackendLimiter, QuotaWaitTooLong


async def _run_calls(
    limiter: BackendLimiter, count: int, recipients: int, rng: random.Random
) -> list[tuple[float, float]]:
    """Make `count` calls of random duration; return (granted, ended) per call."""
    spans: list[tuple[float, float]] = []

    async def call() -> None:
        grant = await limiter.acquire(recipients)
        granted = time.monotonic()
        await asyncio.sleep(rng.uniform(0, 0.03))
        grant.release()
        spans.append((granted, time.monotonic()))

    await asyncio.gather(*(call() for _ in range(count)))
    return spans


def _most_in_any_window(spans: list[tuple[float, float]], window_s: float) -> int:
    """Most calls a vendor could see in one window, if each arrived anywhere in its span.

    Call j can share a vendor window with the call granted at g when j started before g
    and ended less than a window before g.
    """
    worst = 0
    for granted, _ in spans:
        overlapping = sum(1 for g, e in spans if g <= granted and e > granted - window_s)
        worst = max(worst, overlapping)
    return worst


async def test_call_window_never_exceeded_and_paced_near_ideal() -> None:
    limit, window = 5, 0.4
    limiter = BackendLimiter(limit, window, 0, 0)
    start = time.monotonic()
    spans = await _run_calls(limiter, 20, 1, random.Random(7))
    elapsed = time.monotonic() - start
    assert _most_in_any_window(spans, window) <= limit
    # 20 calls at 5 per window need at least 3 full windows after the first 5.
    assert elapsed >= 3 * window
    assert elapsed < 3 * window + 1.0  # paced, not stalled


async def test_recipient_window_counts_recipients() -> None:
    limiter = BackendLimiter(1000, 1.0, 100, 0.4)
    spans = await _run_calls(limiter, 8, 40, random.Random(3))
    # 100 recipients per window at 40 per call: never more than 2 calls per window.
    assert _most_in_any_window(spans, 0.4) <= 2


async def test_start_is_not_a_burst_above_the_limit() -> None:
    limiter = BackendLimiter(3, 10.0, 0, 0)
    grants = [await limiter.acquire(1) for _ in range(3)]
    with pytest.raises(QuotaWaitTooLong):
        await limiter.acquire(1, deadline=time.monotonic() + 0.2)
    for grant in grants:
        grant.release()


async def test_block_pauses_everything() -> None:
    limiter = BackendLimiter(100, 1.0, 0, 0)
    # Timed from before the block: a busy machine that paused this process between the
    # block and a later start made the wait look shorter than it was.
    start = time.monotonic()
    limiter.block(0.3)
    assert limiter.is_blocked()
    (await limiter.acquire(1)).release()
    assert time.monotonic() - start >= 0.29
    assert not limiter.is_blocked()


async def test_block_beyond_deadline_fails_fast() -> None:
    limiter = BackendLimiter(100, 1.0, 0, 0)
    limiter.block(5)
    start = time.monotonic()
    with pytest.raises(QuotaWaitTooLong):
        await limiter.acquire(1, deadline=time.monotonic() + 1)
    assert time.monotonic() - start < 0.5


async def test_in_flight_calls_hold_their_slot() -> None:
    limiter = BackendLimiter(1, 0.1, 0, 0)
    grant = await limiter.acquire(1)
    waiter = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0.3)  # longer than the window, but the first call has not ended
    assert not waiter.done()
    grant.release()
    second = await asyncio.wait_for(waiter, 1)
    second.release()


async def test_batches_take_turns() -> None:
    limiter = BackendLimiter(4, 0.2, 0, 0)
    order: list[str] = []

    async def batch(name: str, calls: int) -> None:
        for _ in range(calls):
            grant = await limiter.acquire(1)
            order.append(name)
            grant.release()

    big = asyncio.create_task(batch("big", 12))
    await asyncio.sleep(0)  # the big batch queues first
    small = asyncio.create_task(batch("small", 2))
    await asyncio.gather(big, small)
    # The big batch took the free window (4 grants) before the small one arrived; from
    # then on they alternate, so the small batch is done by grant 8 of 14, not at the end.
    small_positions = [i for i, name in enumerate(order) if name == "small"]
    assert small_positions == [5, 7]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_head_waiter_takes_freed_room_on_the_next_loop_pass() -> None:
    """When room comes, the waiter next in line is granted on the first loop pass: every
    pass it waits longer is quota the vendor would have allowed and nobody used. Counted
    in loop passes on a fake clock, not timed."""
    clock = _Clock()
    limiter = BackendLimiter(10, 1.0, 0, 0, clock=clock)
    in_flight = await limiter.acquire(1)
    limiter.block(5.0)  # on the fake clock: the waiter sleeps on a 5 s (real) timer
    waiting = asyncio.create_task(limiter.acquire(1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    clock.now = 5.0  # the pause is over; the end of the call in flight wakes the waiter
    in_flight.release()
    await asyncio.sleep(0)  # one loop pass
    assert waiting.done()
    (await waiting).release()
    assert limiter.usage() == [("calls", 2, 10)]
