"""The PostgreSQL store's recipient lists (store/postgres.py has the batches;
store/sql/lists.py what both SQL stores do alike with a list's pages)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import asyncpg

from imgate.store.postgres_replicas import PostgresReplicas
from imgate.store.records import ListRow
from imgate.store.sql import lists
from imgate.store.sql.queries import POSTGRESQL_QUERIES as Q


def _list(record: asyncpg.Record) -> ListRow:
    row = ListRow(*record.values())
    row.fingerprint = bytes(row.fingerprint)
    return row


class PostgresLists(PostgresReplicas):
    """UploadRecipients' lists in a PostgreSQL schema."""

    async def create_list(self, row: ListRow) -> None:
        self._committed(await self.pool.execute(Q["create_list"], *dataclasses.astuple(row)))

    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        async with self._transaction() as conn:
            found = await conn.fetchrow(Q["unfinished_list"], list_id)
            if found is None:
                raise lists.unknown(list_id)
            key, count, received = found["list_key"], found["count"], found["received"]
            inserted = await conn.fetch(Q["add_members"], key, list(ids))
            new_ids, new_indexes = lists.first_new(
                ids, received, {r["recipient_id"] for r in inserted}
            )
            page = lists.partial_page(count, len(new_ids))
            last = None if page is None else await conn.fetchrow(Q["list_page"], key, page)
            await conn.executemany(
                Q["put_list_page"],
                lists.page_rows(
                    key, count, new_ids, new_indexes, None if last is None else tuple(last)
                ),
            )
            await conn.execute(Q["count_list"], key, count + len(new_ids), received + len(ids))
        return len(new_ids)

    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        stored: asyncpg.Record | None = None
        async with self._transaction() as conn:
            if row.request_id:
                # Two uploads racing one request_id finish one at a time: the second
                # waits for the first's commit, then finds its list.
                await conn.execute(Q["advisory_lock"], f"list {row.caller} {row.request_id}")
                found = await conn.fetchrow(Q["list_by_request"], row.caller, row.request_id)
            else:
                found = None
            if found is None:
                stored = await conn.fetchrow(
                    Q["finish_list"],
                    row.list_id,
                    row.request_id,
                    row.fingerprint,
                    row.widest_id,
                    row.widest_index,
                    row.ready_time,
                    row.longest,
                )
        if found is not None:
            await self.delete_list(row.list_id)
            return _list(found), False
        self._committed(await self.pool.execute(Q["delete_list_members"], row.list_id))
        assert stored is not None, "finish_list of an unknown list"
        return _list(stored), True

    async def get_list(self, list_id: str) -> ListRow | None:
        found = await self.pool.fetchrow(Q["list"], list_id)
        return None if found is None else _list(found)

    async def delete_list(self, list_id: str) -> None:
        async with self._transaction() as conn:
            key = await conn.fetchval(Q["delete_list"], list_id)
            if key is not None:
                for statement in Q.all("delete_list_rows"):
                    await conn.execute(statement, key)
