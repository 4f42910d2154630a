"""The PostgreSQL store's recipient lists (store/postgres.py has the batches)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import asyncpg

from imgate.store.base import (
    RECIPIENT_PAGE,
    ListRow,
)
from imgate.store.pages import decode_recipients, encode_list_page
from imgate.store.postgres_replicas import PostgresReplicas

_LIST_COLUMNS = ", ".join(f.name for f in dataclasses.fields(ListRow))


def _list(record: asyncpg.Record) -> ListRow:
    row = ListRow(*record.values())
    row.fingerprint = bytes(row.fingerprint)
    return row


class PostgresLists(PostgresReplicas):
    """UploadRecipients' lists in a PostgreSQL schema."""

    async def create_list(self, row: ListRow) -> None:
        await self.pool.execute(
            f"INSERT INTO recipient_lists ({_LIST_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            *dataclasses.astuple(row),
        )

    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchrow(
                "SELECT list_key, count, received FROM recipient_lists "
                "WHERE list_id = $1 AND ready_time IS NULL FOR UPDATE",
                list_id,
            )
            if found is None:
                raise LookupError(f"no unfinished list {list_id!r}")
            key, count, received = found["list_key"], found["count"], found["received"]
            # The unique index decides what is new: the ids it let in come back. Within
            # the page, the first occurrence of an id is the one that counts.
            inserted = await conn.fetch(
                "INSERT INTO list_members (list_key, recipient_id) "
                "SELECT $1, id FROM unnest($2::text[]) WITH ORDINALITY AS page(id, position) "
                "ORDER BY position ON CONFLICT DO NOTHING RETURNING recipient_id",
                key,
                list(ids),
            )
            new = {r["recipient_id"] for r in inserted}
            new_ids: list[str] = []
            new_indexes: list[int] = []
            if len(new) == len(ids):
                new_ids, new_indexes = list(ids), list(range(received, received + len(ids)))
            elif new:
                for index, recipient in enumerate(ids, received):
                    if recipient in new:
                        new.discard(recipient)  # later copies in the page are duplicates
                        new_ids.append(recipient)
                        new_indexes.append(index)
            added = len(new_ids)
            page, filled = divmod(count, RECIPIENT_PAGE)
            if added and filled:  # the last page is partial: it is rewritten, extended
                last = await conn.fetchrow(
                    "SELECT ids, indexes FROM list_pages WHERE list_key = $1 AND page = $2",
                    key,
                    page,
                )
                assert last is not None
                old_ids, old_indexes = decode_recipients(
                    last["ids"], last["indexes"], page * RECIPIENT_PAGE
                )
                new_ids, new_indexes = old_ids + new_ids, old_indexes + new_indexes
            await conn.executemany(
                "INSERT INTO list_pages (list_key, page, ids, indexes) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (list_key, page) DO UPDATE "
                "SET ids = excluded.ids, indexes = excluded.indexes",
                [
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
                ],
            )
            await conn.execute(
                "UPDATE recipient_lists SET count = $2, received = $3 WHERE list_key = $1",
                key,
                count + added,
                received + len(ids),
            )
        return added

    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        stored: asyncpg.Record | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            if row.request_id:
                # Two uploads racing one request_id finish one at a time: the second
                # waits for the first's commit, then finds its list.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    f"list {row.caller} {row.request_id}",
                )
                found = await conn.fetchrow(
                    f"SELECT {_LIST_COLUMNS} FROM recipient_lists "
                    "WHERE caller = $1 AND request_id = $2",
                    row.caller,
                    row.request_id,
                )
            else:
                found = None
            if found is None:
                stored = await conn.fetchrow(
                    "UPDATE recipient_lists SET request_id = $2, fingerprint = $3, "
                    "widest_id = $4, widest_index = $5, ready_time = $6 WHERE list_id = $1 "
                    f"RETURNING {_LIST_COLUMNS}",
                    row.list_id,
                    row.request_id,
                    row.fingerprint,
                    row.widest_id,
                    row.widest_index,
                    row.ready_time,
                )
        if found is not None:
            await self.delete_list(row.list_id)
            return _list(found), False
        # The unique index has done its work.
        await self.pool.execute(
            "DELETE FROM list_members WHERE list_key = "
            "(SELECT list_key FROM recipient_lists WHERE list_id = $1)",
            row.list_id,
        )
        assert stored is not None, "finish_list of an unknown list"
        return _list(stored), True

    async def get_list(self, list_id: str) -> ListRow | None:
        found = await self.pool.fetchrow(
            f"SELECT {_LIST_COLUMNS} FROM recipient_lists WHERE list_id = $1", list_id
        )
        return None if found is None else _list(found)

    async def delete_list(self, list_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            key = await conn.fetchval(
                "DELETE FROM recipient_lists WHERE list_id = $1 RETURNING list_key", list_id
            )
            if key is not None:
                for table in ("list_members", "list_pages"):
                    await conn.execute(f"DELETE FROM {table} WHERE list_key = $1", key)
