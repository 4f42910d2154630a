"""Small strict parsers shared by the emulators (JSON, lengths, integers)."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from imgate.vendors.base.chars import java_len as java_len  # re-exported for the emulators


class NotJson(ValueError):
    """Text that a strict JSON parser refuses."""


def _refuse_constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise NotJson("an object repeats a key")
    return value


def strict_json(text: str | bytes) -> Any:
    """Parse JSON as strictly as the vendors' parsers may: NaN and Infinity are not JSON,
    and an object that repeats a key is refused (no vendor documents which value its
    parser keeps, so a request relying on one is refused rather than guessed)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise NotJson(str(exc)) from None


def is_int(value: object) -> TypeGuard[int]:
    """A JSON integer (bool is not one, although Python says so)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number."""
    return isinstance(value, int | float) and not isinstance(value, bool)


UINT32_MAX = 4_294_967_295


def is_uint32(value: object) -> TypeGuard[int]:
    """A JSON integer within 0..4294967295."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT32_MAX
