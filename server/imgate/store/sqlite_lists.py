"""The SQLite store's recipient lists (store/sqlite.py has the batches; store/sql/lists.py
what both SQL stores do alike with a list's pages)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

from imgate.store.records import ListRow
from imgate.store.sql import lists
from imgate.store.sql.queries import SQLITE_QUERIES as Q
from imgate.store.sqlite_threads import SQLiteFile

# Members of a finished list are deleted this many per transaction, so that the writer
# (every batch's write-ahead marks) never waits long behind a list of millions.
_MEMBERS_PER_DELETE = 50_000


class SQLiteLists(SQLiteFile):
    """UploadRecipients' lists in a SQLite file."""

    async def create_list(self, row: ListRow) -> None:
        values = dataclasses.astuple(row)
        await self._write(lambda conn: conn.execute(Q["create_list"], values))

    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found = conn.execute(Q["unfinished_list"], (list_id,)).fetchone()
            if found is None:
                raise lists.unknown(list_id)
            key, count, received = found
            new_ids, new_indexes = self._add_members(conn, key, ids, received)
            page = lists.partial_page(count, len(new_ids))
            last = None if page is None else conn.execute(Q["list_page"], (key, page)).fetchone()
            conn.executemany(
                Q["put_list_page"], lists.page_rows(key, count, new_ids, new_indexes, last)
            )
            conn.execute(Q["count_list"], (key, count + len(new_ids), received + len(ids)))
            return len(new_ids)

        return await self._write(op)

    @staticmethod
    def _add_members(
        conn: sqlite3.Connection, key: int, ids: Sequence[str], received: int
    ) -> tuple[list[str], list[int]]:
        """The page's ids that the list's unique index let in, with their indexes.

        Usually all of a page is new: one executemany says so by its count of changes.
        Otherwise the page is undone and inserted again row by row, each INSERT OR IGNORE
        telling if it was new."""
        insert = Q["add_member"]
        new_ids: list[str] = list(ids)
        new_indexes: list[int] = list(range(received, received + len(ids)))
        conn.execute("SAVEPOINT page")
        before = conn.total_changes
        conn.executemany(insert, [(key, recipient) for recipient in ids])
        if conn.total_changes - before != len(ids):
            conn.execute("ROLLBACK TO page")
            execute = conn.execute
            new_ids, new_indexes = [], []
            for index, recipient in enumerate(ids, received):
                if execute(insert, (key, recipient)).rowcount:
                    new_ids.append(recipient)
                    new_indexes.append(index)
        conn.execute("RELEASE page")
        return new_ids, new_indexes

    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        def op(conn: sqlite3.Connection) -> tuple[ListRow, bool]:
            if row.request_id:
                found = conn.execute(Q["list_by_request"], (row.caller, row.request_id))
                earlier = found.fetchone()
                if earlier is not None:
                    return ListRow(*earlier), False
            stored = conn.execute(
                Q["finish_list"],
                (
                    row.list_id,
                    row.request_id,
                    row.fingerprint,
                    row.widest_id,
                    row.widest_index,
                    row.ready_time,
                    row.longest,
                ),
            ).fetchone()
            return ListRow(*stored), True

        finished, created = await self._write(op)
        if created:
            await self._delete_members(row.list_id)  # the unique index has done its work
        else:
            await self.delete_list(row.list_id)
        return finished, created

    async def _delete_members(self, list_id: str) -> None:
        def op(conn: sqlite3.Connection) -> bool:
            """Delete the next _MEMBERS_PER_DELETE members (a key range); True when done."""
            found = conn.execute(Q["list_key"], (list_id,)).fetchone()
            if found is None:
                return True
            key = found[0]
            last = conn.execute(Q["last_member"], (key, _MEMBERS_PER_DELETE - 1)).fetchone()
            if last is None:
                conn.execute(Q["delete_members"], (key,))
                return True
            conn.execute(Q["delete_members_to"], (key, last[0]))
            return False

        while not await self._write(op):
            pass

    async def get_list(self, list_id: str) -> ListRow | None:
        def op(conn: sqlite3.Connection) -> ListRow | None:
            found = conn.execute(Q["list"], (list_id,)).fetchone()
            return None if found is None else ListRow(*found)

        return await self._read(op)

    async def delete_list(self, list_id: str) -> None:
        await self._delete_members(list_id)

        def op(conn: sqlite3.Connection) -> None:
            found = conn.execute(Q["delete_list"], (list_id,)).fetchone()
            if found is not None:
                for statement in Q.all("delete_list_rows"):
                    conn.execute(statement, found)

        await self._write(op)
