"""Which store a `[store] url` names: the one place that knows every implementation.

The interface (`store.base`) knows none of them; each implementation imports the base.
STORE_KINDS lists them, and the shared store suite (tests/test_store.py) runs on each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from imgate.store.base import Store
from imgate.store.records import StoreError


@dataclass(frozen=True, slots=True)
class StoreKind:
    """One store implementation and the URLs that name it."""

    name: str
    schemes: tuple[str, ...]
    """URL prefixes that name this kind (the whole URL for `memory`)."""
    open: Callable[[str, Path, float], Store]
    """(url, state_dir, lease_s) -> a store, not yet opened."""
    durable: bool
    """A new store on the same URL sees what an earlier one wrote (a restart)."""
    needs_server: bool
    """The URL names a server the store connects to (else a file or nothing)."""
    whole_url: bool = False
    """`schemes` are whole URLs, not prefixes."""

    def names(self, url: str) -> bool:
        """Whether `url` names this kind."""
        return url in self.schemes if self.whole_url else url.startswith(self.schemes)


def _postgres(url: str, state_dir: Path, lease_s: float) -> Store:
    from imgate.store.postgres import PostgresStore  # asyncpg: imported when used

    return PostgresStore(url, lease_s=lease_s)


def _memory(url: str, state_dir: Path, lease_s: float) -> Store:
    from imgate.store.memory import MemoryStore

    return MemoryStore()


def _sqlite(url: str, state_dir: Path, lease_s: float) -> Store:
    from imgate.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite:")
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise StoreError("store.url: sqlite URL without a path")
    file = Path(path)
    if not file.is_absolute():
        file = state_dir / file
    return SQLiteStore(file)


STORE_KINDS: Final[tuple[StoreKind, ...]] = (
    StoreKind("memory", ("memory",), _memory, durable=False, needs_server=False, whole_url=True),
    StoreKind("sqlite", ("sqlite:",), _sqlite, durable=True, needs_server=False),
    StoreKind(
        "postgres", ("postgresql://", "postgres://"), _postgres, durable=True, needs_server=True
    ),
)
"""Every store implementation, in the order `[store] url` documents them."""


def open_store(url: str, state_dir: Path, lease_s: float = 30.0) -> Store:
    """The store for `url`: "memory", "sqlite:///PATH" (PATH absolute), "sqlite:NAME" or
    "postgresql://..." (`lease_s`: how stale a replica is before its batches are taken)."""
    for kind in STORE_KINDS:
        if kind.names(url):
            return kind.open(url, state_dir, lease_s)
    scheme = url.partition(":")[0]
    known = ", ".join(kind.schemes[0].rstrip(":/") for kind in STORE_KINDS)
    raise StoreError(f"store.url: unsupported store {scheme!r} ({known})")
