"""What both SQL stores do alike with a recipient list's pages while it is uploaded.

A list's unique ids are kept in pages of RECIPIENT_PAGE (the layout of a batch's
recipients). Each page of ids uploaded goes through the list's unique index (list_members:
how it tells what is new is the dialect's), then its new ids are appended to the pages:
the last page, when partial, is read back and rewritten extended, the rest are new pages.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from imgate.store.pages import decode_recipients, encode_list_page
from imgate.store.records import RECIPIENT_PAGE


def unknown(list_id: str) -> LookupError:
    return LookupError(f"no unfinished list {list_id!r}")


def first_new(
    ids: Sequence[str], received: int, new: Collection[str]
) -> tuple[list[str], list[int]]:
    """The ids of the page that are in `new` (let in by the unique index), each at its
    first occurrence in the page, with their indexes (`received` + position)."""
    if len(new) == len(ids):
        return list(ids), list(range(received, received + len(ids)))
    left = set(new)
    new_ids: list[str] = []
    new_indexes: list[int] = []
    for index, recipient in enumerate(ids, received):
        if recipient in left:
            left.discard(recipient)  # later copies in the page are duplicates
            new_ids.append(recipient)
            new_indexes.append(index)
    return new_ids, new_indexes


def partial_page(count: int, added: int) -> int | None:
    """The page to read back before appending `added` ids to a list of `count`: its last,
    when partial (None: nothing to add, or the pages so far are full)."""
    page, filled = divmod(count, RECIPIENT_PAGE)
    return page if added and filled else None


def page_rows(
    key: int,
    count: int,
    new_ids: list[str],
    new_indexes: list[int],
    last: tuple[str, str] | None,
) -> list[tuple[int, int, str, str]]:
    """Rows of list_pages (list_key, page, ids, indexes) to write for `new_ids` appended to
    a list of `count` unique ids; `last`: the stored (ids, indexes) of the partial page
    that partial_page named."""
    page, filled = divmod(count, RECIPIENT_PAGE)
    if filled and new_ids:
        assert last is not None, "the list's partial last page is missing"
        old_ids, old_indexes = decode_recipients(last[0], last[1], page * RECIPIENT_PAGE)
        new_ids, new_indexes = old_ids + new_ids, old_indexes + new_indexes
    return [
        (
            key,
            page + offset // RECIPIENT_PAGE,
            *encode_list_page(
                new_ids[offset : offset + RECIPIENT_PAGE],
                new_indexes[offset : offset + RECIPIENT_PAGE],
                page * RECIPIENT_PAGE + offset,
            ),
        )
        for offset in range(0, len(new_ids), RECIPIENT_PAGE)
    ]
