"""What a store holds in this process for the watchers of its batches: who is watching
(Notifier, woken by each change) and the newest outcome pages recorded here (Tails)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Page(Protocol):
    """An outcome page, as Tails sees it (store.records.OutcomePage)."""

    @property
    def seq(self) -> int: ...

    @property
    def data(self) -> bytes: ...


P = TypeVar("P", bound=Page)


class Notifier:
    """Wakes watchers of a batch when something was recorded for it (in this process).

    It holds an entry only while somebody watches: a watcher's event is registered for
    the life of its `watching` block and gone when the block ends, whether or not the
    batch ever changes again (an event taken for a batch that had already ended was kept
    forever, one per BatchSend: issue 20).
    """

    def __init__(self) -> None:
        self._watching: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watching(self, batch_id: str) -> Iterator[asyncio.Event]:
        """An event set by every change of `batch_id` while the block runs; clear it
        *before* reading, so a change during the read is not missed."""
        event = asyncio.Event()
        events = self._watching.setdefault(batch_id, set())
        events.add(event)
        try:
            yield event
        finally:
            events.discard(event)
            if not events:
                self._watching.pop(batch_id, None)

    def notify(self, batch_id: str) -> None:
        for event in self._watching.get(batch_id, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._watching.values():
            for event in events:
                event.set()

    def __len__(self) -> int:
        """Batches watched now (a gauge of what this process holds per batch)."""
        return len(self._watching)


class Tails(Generic[P]):
    """The newest outcome pages of the batches recorded by this process, per batch.

    Watchers in this process follow a live batch from here without a store read, and
    share the pages' bytes (one copy however many watch). Bounded in bytes per batch;
    a batch's tail is dropped when it ends or its run stops here (`drop`), so the whole
    is bounded by the batches running at once.
    """

    def __init__(self, max_bytes_per_batch: int = 1 << 20) -> None:
        self.max_bytes_per_batch = max_bytes_per_batch
        self._pages: dict[str, collections.deque[P]] = {}
        self._bytes: dict[str, int] = {}

    def add(self, batch_id: str, page: P) -> None:
        pages = self._pages.get(batch_id)
        if pages is None:
            pages = self._pages[batch_id] = collections.deque()
            self._bytes[batch_id] = 0
        elif pages and pages[-1].seq != page.seq - 1:
            pages.clear()  # not contiguous (recorded out of order): read the store instead
            self._bytes[batch_id] = 0
        pages.append(page)
        size = self._bytes[batch_id] + len(page.data)
        while len(pages) > 1 and size > self.max_bytes_per_batch:
            size -= len(pages.popleft().data)
        self._bytes[batch_id] = size

    def read(self, batch_id: str, after_seq: int, max_bytes: int) -> list[P] | None:
        """Pages after `after_seq` (at least one, up to `max_bytes`), [] when none was
        recorded since, or None when the tail does not reach back to `after_seq`."""
        pages = self._pages.get(batch_id)
        if not pages or pages[0].seq > after_seq + 1:
            return None
        if pages[-1].seq <= after_seq:
            return []
        found: list[P] = []
        size = 0
        for page in itertools.islice(pages, after_seq + 1 - pages[0].seq, None):
            if found and size + len(page.data) > max_bytes:
                break
            found.append(page)
            size += len(page.data)
        return found

    def drop(self, batch_id: str) -> None:
        self._pages.pop(batch_id, None)
        self._bytes.pop(batch_id, None)

    def __len__(self) -> int:
        return len(self._pages)
