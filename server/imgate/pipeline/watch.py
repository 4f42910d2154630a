"""Following a batch's outcomes: every one exactly once, in order, then its end.

A watcher reads outcome pages from the store at its own pace, at most WATCH_BYTES at
once (its memory is bounded in bytes, whatever a page holds); pages this process
recorded lately come from the store's shared tails. It waits for the store's
notification between reads, and checks the store at least every WATCH_POLL_S (another
process may have written; a notification may be lost), except while the batch runs
here: then its end here wakes the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from imgate.store.base import Store
from imgate.store.records import BatchRow, OutcomePage

WATCH_POLL_S = 1.0
WATCH_BYTES = 64 << 10


class GatewayStopping(Exception):
    """This gateway is shutting down and the batch will not end here."""


class BatchStalled(Exception):
    """The batch's run stopped because the store cannot be written; it goes on (in this
    process) once it can. Watchers are told rather than left waiting."""


async def watch(
    store: Store,
    batch_id: str,
    after_seq: int,
    live_here: Callable[[str], bool],
    stopped: asyncio.Event,
    stalled: Callable[[str], bool] = lambda _: False,
) -> AsyncIterator[tuple[list[OutcomePage], BatchRow | None]]:
    """(pages, None) for outcomes after `after_seq` as they are recorded, then
    ([], row) once the batch has ended. Raises GatewayStopping when this gateway stops
    (`stopped`) before the batch ends, BatchStalled when the batch waits for the store
    (`stalled(batch_id)`). `live_here(batch_id)`: it runs here, not ended."""
    with store.notifier.watching(batch_id) as changed:
        while True:
            changed.clear()
            pages = await store.read_outcomes(batch_id, after_seq, WATCH_BYTES)
            if pages:
                after_seq = pages[-1].seq
                yield pages, None
                continue
            if stalled(batch_id):
                raise BatchStalled
            if live_here(batch_id) and not stopped.is_set():
                await woken(changed, WATCH_POLL_S)
                continue
            row = await store.get_batch(batch_id)
            if row is None:
                raise GatewayStopping  # purged while watched
            if row.ended:
                # Every page was recorded before the batch ended: read what came.
                pages = await store.read_outcomes(batch_id, after_seq, WATCH_BYTES)
                if pages:
                    after_seq = pages[-1].seq
                    yield pages, None
                    continue
                yield [], row
                return
            if stopped.is_set():
                raise GatewayStopping
            await woken(changed, WATCH_POLL_S)


async def woken(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` has passed, whichever comes first.

    Not asyncio.wait_for: on Python 3.11 it returns normally when the waiting task is
    cancelled just after the event was set, so a cancelled BatchSend's stream went on
    and its bound batch kept sending (rule 10; issue 15). asyncio.timeout does not.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
