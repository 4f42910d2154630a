"""A recall batch's recipients, read from its original's outcome pages: every store makes
them the same way (Store.create_recall).

The recipients are the original's ACCEPTED and UNCERTAIN ones, in the order their outcomes
were recorded, each keeping its index; beside each page of RECIPIENT_PAGE of them, a page
of their RecallKeys (JSON text: [state, message id, time ms] per recipient).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from imgate.store.pages import encode_recipients
from imgate.store.records import RECIPIENT_PAGE, RecallKey
from imgate.v1 import gateway_pb2 as pb

_RECALLED = frozenset({pb.DELIVERY_STATE_ACCEPTED, pb.DELIVERY_STATE_UNCERTAIN})


def recalled_outcomes(pages: Iterable[bytes]) -> Iterator[tuple[str, int, RecallKey]]:
    """(recipient, index, key) of each ACCEPTED or UNCERTAIN outcome of the pages, in
    order; a page is parsed only when it is reached."""
    for data in pages:
        for outcome in pb.BatchSendResponse.FromString(data).outcomes:
            if outcome.state in _RECALLED:
                key = RecallKey(outcome.state, outcome.vendor_message_id, outcome.vendor_time_ms)
                yield outcome.recipient_id, outcome.index, key


RecipientPageRow = tuple[str, int, str, str]
KeyPageRow = tuple[str, int, str]
PageRows = tuple[RecipientPageRow, KeyPageRow, int]
"""Rows of recipient_pages (batch_id, page, ids, indexes) and of recall_keys (batch_id,
page, keys), and how many recipients they hold."""


class RecallPager:
    """Cuts a recall batch's recipients into pages of RECIPIENT_PAGE as they come: feed
    it the original's outcome pages (`add`), then take what is left (`finish`)."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        self._page = 0
        self._ids: list[str] = []
        self._indexes: list[int] = []
        self._keys: list[RecallKey] = []

    def add(self, outcome_page: bytes) -> list[PageRows]:
        """The full pages that `outcome_page`'s recalled recipients complete."""
        full = []
        for recipient, index, key in recalled_outcomes((outcome_page,)):
            self._ids.append(recipient)
            self._indexes.append(index)
            self._keys.append(key)
            if len(self._ids) == RECIPIENT_PAGE:
                full.append(self._cut())
        return full

    def finish(self) -> list[PageRows]:
        """The last, partial page, if any."""
        return [self._cut()] if self._ids else []

    def _cut(self) -> PageRows:
        rows = (
            (self._batch_id, self._page, *encode_recipients(self._ids, self._indexes)),
            (self._batch_id, self._page, encode_keys(self._keys)),
            len(self._ids),
        )
        self._page += 1
        self._ids, self._indexes, self._keys = [], [], []
        return rows


def recall_pages(batch_id: str, outcome_pages: Iterable[bytes]) -> Iterator[PageRows]:
    """RecallPager over `outcome_pages`, read one at a time."""
    pager = RecallPager(batch_id)
    for data in outcome_pages:
        yield from pager.add(data)
    yield from pager.finish()


def encode_keys(keys: Iterable[RecallKey]) -> str:
    return json.dumps([list(key) for key in keys], separators=(",", ":"), ensure_ascii=False)


def decode_keys(text: str) -> list[RecallKey]:
    return [RecallKey(int(state), str(key), int(ms)) for state, key, ms in json.loads(text)]


def read_key_pages(pages: Iterable[tuple[int, str]], start: int, end: int) -> list[RecallKey]:
    """Keys [start, end) from the rows (page, keys) of the pages that hold them, in order."""
    found: list[RecallKey] = []
    for _, text in pages:
        found.extend(decode_keys(text))
    offset = start - (start // RECIPIENT_PAGE) * RECIPIENT_PAGE
    return found[offset : offset + end - start]
