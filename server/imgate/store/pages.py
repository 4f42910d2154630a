"""How the SQL stores keep recipients: in pages of RECIPIENT_PAGE unique ids, each page
as text (ids joined by a separator, their indexes left out when they are implied). Also
the benchmark's floors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from imgate.store.records import RECIPIENT_PAGE

# A page of ids as text: "\n" then the ids joined by "\n" (validated ids hold no control
# character, and joining is ten times faster than JSON, on the way to the first call);
# a page whose ids do hold one is JSON, which never starts with "\n". Pages written as
# JSON by earlier versions read back unchanged.
_ID_SEPARATOR = "\n"


def encode_recipients(ids: Sequence[str], indexes: Sequence[int] | None) -> tuple[str, str]:
    """A page of recipients as text (see _ID_SEPARATOR); indexes "" when implied."""
    joined = _ID_SEPARATOR.join(ids)
    if ids and joined.count(_ID_SEPARATOR) == len(ids) - 1:
        text = _ID_SEPARATOR + joined
    else:  # empty, or an id holds the separator
        text = json.dumps(list(ids))
    return text, "" if indexes is None else json.dumps(list(indexes))


def encode_list_page(ids: Sequence[str], indexes: Sequence[int], start: int) -> tuple[str, str]:
    """encode_recipients for a list page: indexes left out when they are start, start+1, ..."""
    # Indexes only grow, so first and last at their positions means every one is.
    identity = bool(indexes) and indexes[0] == start and indexes[-1] == start + len(indexes) - 1
    return encode_recipients(ids, None if identity else indexes)


def decode_recipients(ids: str, indexes: str, start: int) -> tuple[list[str], list[int]]:
    decoded: list[str] = (
        ids[1:].split(_ID_SEPARATOR) if ids.startswith(_ID_SEPARATOR) else json.loads(ids)
    )
    if indexes:
        return decoded, json.loads(indexes)
    return decoded, list(range(start, start + len(decoded)))


def batch_pages(
    batch_id: str, ids: Sequence[str], indexes: Sequence[int] | None
) -> list[tuple[str, int, str, str]]:
    """A batch's unique recipients as rows of recipient_pages: (batch_id, page, ids,
    indexes), RECIPIENT_PAGE ids a page."""
    return [
        (
            batch_id,
            number,
            *encode_recipients(
                ids[start : start + RECIPIENT_PAGE],
                None if indexes is None else indexes[start : start + RECIPIENT_PAGE],
            ),
        )
        for number, start in enumerate(range(0, len(ids), RECIPIENT_PAGE))
    ]


def read_pages(pages: Iterable[Iterable[Any]], start: int, end: int) -> tuple[list[str], list[int]]:
    """Recipients [start, end) and their indexes, from the rows (page, ids, indexes) of the
    pages that hold them, in order."""
    ids: list[str] = []
    indexes: list[int] = []
    first = start // RECIPIENT_PAGE
    for page, page_ids, page_indexes in pages:
        decoded_ids, decoded_indexes = decode_recipients(
            page_ids, page_indexes, page * RECIPIENT_PAGE
        )
        ids.extend(decoded_ids)
        indexes.extend(decoded_indexes)
    offset = start - first * RECIPIENT_PAGE
    return ids[offset : offset + end - start], indexes[offset : offset + end - start]
