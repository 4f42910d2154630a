"""How a page of recipient ids is stored as text (both SQL stores, and the benchmark's
floors): ids joined by a separator, their indexes left out when they are implied."""

from __future__ import annotations

import json
from collections.abc import Sequence

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
