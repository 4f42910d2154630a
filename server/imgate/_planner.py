"""Batch planning: remove duplicate recipients, then cut the rest into vendor calls.

Chunks are consecutive runs of the de-duplicated recipients, as long as the translator
allows: at most `recipients_per_call` ids, and for byte-capped vendors (Tencent 12 KB)
at most what fits the body. Both steps are linear in the number of recipients; the byte
cut uses prefix sums and binary search, so 100,000 ids plan in milliseconds.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from imgate.translators._base import Translator


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
    """Sizes of consecutive chunks covering `recipients` in order (greedy: each chunk
    takes as many ids as the caps allow).

    Caps: `translator.recipients_per_call(prepared, recipients_per_call)` ids, and when
    the vendor caps the body (`default_limits.max_body_bytes`), `base_body_bytes` plus
    the ids' `recipient_body_bytes` within it. An id too long to fit any body still gets
    a chunk of its own; validation keeps that from happening.
    """
    total = len(recipients)
    per_call = max(1, translator.recipients_per_call(prepared, recipients_per_call))
    max_body_bytes = translator.default_limits.max_body_bytes
    if max_body_bytes is None:
        full, rest = divmod(total, per_call)
        return [per_call] * full + ([rest] if rest else [])
    budget = max_body_bytes - translator.base_body_bytes(prepared)
    # ends[i] = bytes the first i recipients add; a chunk [start, end) adds
    # ends[end] - ends[start].
    ends = list(accumulate(translator.recipients_body_bytes(recipients), initial=0))
    sizes: list[int] = []
    start = 0
    while start < total:
        last = min(start + per_call, total)
        end = bisect_right(ends, ends[start] + budget, start + 1, last + 1) - 1
        end = max(end, start + 1)
        sizes.append(end - start)
        start = end
    return sizes
