"""Which store a `[store] url` names: the one place that knows every implementation.

The interface (`store.base`) knows none of them; each implementation imports the base.
"""

from __future__ import annotations

from pathlib import Path

from imgate.store.base import Store, StoreError


def open_store(url: str, state_dir: Path, lease_s: float = 30.0) -> Store:
    """The store for `url`: "memory", "sqlite:///PATH" (PATH absolute), "sqlite:NAME" or
    "postgresql://..." (`lease_s`: how stale a replica is before its batches are taken)."""
    if url.startswith(("postgresql://", "postgres://")):
        from imgate.store.postgres import PostgresStore  # asyncpg: imported when used

        return PostgresStore(url, lease_s=lease_s)
    if url == "memory":
        from imgate.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
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
    scheme = url.partition(":")[0]
    raise StoreError(f"store.url: unsupported store {scheme!r} (memory, sqlite, postgresql)")
