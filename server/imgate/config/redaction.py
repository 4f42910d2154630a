"""Keeping credentials out of sight: vendor credentials whose repr hides them, and URLs
or messages with their password replaced by *** for logs and errors."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any


class Secrets(Mapping[str, Any]):
    """Vendor credentials: a read-only mapping whose repr never shows the values."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Secrets(" + ", ".join(f"{k}=***" for k in self._values) + ")"


def redacted_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparseable URL)"
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def hide_password(text: str, url: str) -> str:
    """`text` (an error's message, say) with `url`'s password, if any, replaced by ***."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text
