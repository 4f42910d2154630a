"""Batch planning: remove duplicate recipients, then cut the rest into vendor calls.

Chunks are consecutive runs of the de-duplicated recipients, as long as the translator
allows: at most `recipients_per_call` ids, and for byte-capped vendors (Tencent 12 KB)
at most what fits the body. Both steps are linear in the number of recipients; the byte
cut uses prefix sums and binary search, so 100,000 ids plan in milliseconds.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from imgate.vendors.base.translator import Translator


@dataclass(frozen=True, slots=True)
class UniqueRecipients:
    """The request's recipients without duplicates, in request order."""

    indexes: Sequence[int]
    """Position of each id's first occurrence in the request."""
    ids: list[str]
    duplicates_removed: int

    def __len__(self) -> int:
        return len(self.ids)


def dedupe(recipient_ids: Sequence[str]) -> UniqueRecipients:
    """Remove duplicate ids; the first occurrence keeps its index."""
    ids = list(recipient_ids)
    if len(set(ids)) == len(ids):
        # The common case: no duplicates, so no per-id index bookkeeping at all.
        return UniqueRecipients(range(len(ids)), ids, 0)
    first_index: dict[str, int] = {}
    for index, recipient_id in enumerate(ids):
        first_index.setdefault(recipient_id, index)
    return UniqueRecipients(
        list(first_index.values()), list(first_index), len(ids) - len(first_index)
    )


def plan_chunks(
    translator: Translator,
    prepared: Any,
    recipients: Sequence[str],
    recipients_per_call: int,
) -> list[int]:
    """Sizes of consecutive chunks covering `recipients` in order; see iter_chunk_sizes."""
    return list(iter_chunk_sizes(translator, prepared, recipients, recipients_per_call))


def iter_chunk_sizes(
    translator: Translator,
    prepared: Any,
    recipients: Sequence[str],
    recipients_per_call: int,
) -> Iterator[int]:
    """Sizes of consecutive chunks covering `recipients` in order (greedy: each chunk
    takes as many ids as the caps allow), planned one chunk at a time so the first call
    can start before a 100,000-id batch is fully planned.

    Caps: `translator.recipients_per_call(prepared, recipients_per_call)` ids, and when
    the vendor caps the body (`spec.limits.max_body_bytes`), `base_body_bytes` plus
    the ids' `recipient_body_bytes` within it. An id too long to fit any body still gets
    a chunk of its own; validation keeps that from happening.
    """
    total = len(recipients)
    per_call = max(1, translator.recipients_per_call(prepared, recipients_per_call))
    if translator.spec.limits.max_body_bytes is None:
        full, rest = divmod(total, per_call)
        yield from [per_call] * full + ([rest] if rest else [])
        return
    start = 0
    while start < total:
        size = chunk_size(translator, prepared, recipients[start : start + per_call])
        yield size
        start += size


def chunk_size(translator: Translator, prepared: Any, window: Sequence[str]) -> int:
    """How many of `window` (the next ids, at most one call's worth) the next chunk takes:
    all of them, or for byte-capped vendors as many as fit the body (at least one)."""
    max_body_bytes = translator.spec.limits.max_body_bytes
    if max_body_bytes is None:
        return len(window)
    budget = max_body_bytes - translator.base_body_bytes(prepared)
    # ends[i] = bytes the window's first i ids add to the body.
    ends = list(accumulate(translator.recipients_body_bytes(window), initial=0))
    return max(1, bisect_right(ends, budget, 1, len(window) + 1) - 1)
