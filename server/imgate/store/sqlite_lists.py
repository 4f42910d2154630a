"""The SQLite store's recipient lists (store/sqlite.py has the batches)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence

from imgate.store.base import RECIPIENT_PAGE, ListRow
from imgate.store.pages import decode_recipients, encode_list_page
from imgate.store.sqlite_threads import SQLiteFile

_LIST_COLUMNS = ", ".join(f.name for f in dataclasses.fields(ListRow))
# Members of a finished list are deleted this many per transaction, so that the writer
# (every batch's write-ahead marks) never waits long behind a list of millions.
_MEMBERS_PER_DELETE = 50_000


class SQLiteLists(SQLiteFile):
    """UploadRecipients' lists in a SQLite file."""

    async def create_list(self, row: ListRow) -> None:
        values = dataclasses.astuple(row)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO recipient_lists ({_LIST_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                values,
            )

        await self._write(op)

    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        def op(conn: sqlite3.Connection) -> int:
            found = conn.execute(
                "SELECT list_key, count, received FROM recipient_lists "
                "WHERE list_id = ? AND ready_time IS NULL",
                (list_id,),
            ).fetchone()
            if found is None:
                raise LookupError(f"no unfinished list {list_id!r}")
            key, count, received = found
            # The unique index decides what is new. Usually all of a page is: one
            # executemany says so by its count of changes. Otherwise the page is undone
            # and inserted again row by row, each INSERT OR IGNORE telling if it was new.
            insert = "INSERT OR IGNORE INTO list_members (list_key, recipient_id) VALUES (?, ?)"
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
            added = len(new_ids)
            page, filled = divmod(count, RECIPIENT_PAGE)
            if added and filled:  # the last page is partial: it is rewritten, extended
                page_ids, page_indexes = conn.execute(
                    "SELECT ids, indexes FROM list_pages WHERE list_key = ? AND page = ?",
                    (key, page),
                ).fetchone()
                old_ids, old_indexes = decode_recipients(
                    page_ids, page_indexes, page * RECIPIENT_PAGE
                )
                new_ids, new_indexes = old_ids + new_ids, old_indexes + new_indexes
            conn.executemany(
                "INSERT OR REPLACE INTO list_pages (list_key, page, ids, indexes) VALUES (?,?,?,?)",
                [
                    (
                        key,
                        page + offset // RECIPIENT_PAGE,
                        *encode_list_page(
                            new_ids[offset : offset + RECIPIENT_PAGE],
                            new_indexes[offset : offset + RECIPIENT_PAGE],
                            (page * RECIPIENT_PAGE) + offset,
                        ),
                    )
                    for offset in range(0, len(new_ids), RECIPIENT_PAGE)
                ],
            )
            conn.execute(
                "UPDATE recipient_lists SET count = ?, received = ? WHERE list_key = ?",
                (count + added, received + len(ids), key),
            )
            return added

        return await self._write(op)

    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        def op(conn: sqlite3.Connection) -> tuple[ListRow, bool]:
            if row.request_id:
                found = conn.execute(
                    f"SELECT {_LIST_COLUMNS} FROM recipient_lists "
                    "WHERE caller = ? AND request_id = ?",
                    (row.caller, row.request_id),
                ).fetchone()
                if found is not None:
                    return ListRow(*found), False
            conn.execute(
                "UPDATE recipient_lists SET request_id = ?, fingerprint = ?, widest_id = ?, "
                "widest_index = ?, ready_time = ? WHERE list_id = ?",
                (
                    row.request_id,
                    row.fingerprint,
                    row.widest_id,
                    row.widest_index,
                    row.ready_time,
                    row.list_id,
                ),
            )
            stored = conn.execute(
                f"SELECT {_LIST_COLUMNS} FROM recipient_lists WHERE list_id = ?", (row.list_id,)
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
            found = conn.execute(
                "SELECT list_key FROM recipient_lists WHERE list_id = ?", (list_id,)
            ).fetchone()
            if found is None:
                return True
            key = found[0]
            last = conn.execute(
                "SELECT recipient_id FROM list_members WHERE list_key = ? "
                "ORDER BY recipient_id LIMIT 1 OFFSET ?",
                (key, _MEMBERS_PER_DELETE - 1),
            ).fetchone()
            if last is None:
                conn.execute("DELETE FROM list_members WHERE list_key = ?", (key,))
                return True
            conn.execute(
                "DELETE FROM list_members WHERE list_key = ? AND recipient_id <= ?",
                (key, last[0]),
            )
            return False

        while not await self._write(op):
            pass

    async def get_list(self, list_id: str) -> ListRow | None:
        def op(conn: sqlite3.Connection) -> ListRow | None:
            found = conn.execute(
                f"SELECT {_LIST_COLUMNS} FROM recipient_lists WHERE list_id = ?", (list_id,)
            ).fetchone()
            return None if found is None else ListRow(*found)

        return await self._read(op)

    async def delete_list(self, list_id: str) -> None:
        await self._delete_members(list_id)

        def op(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT list_key FROM recipient_lists WHERE list_id = ?", (list_id,)
            ).fetchone()
            if found is None:
                return
            for table in ("list_members", "list_pages", "recipient_lists"):
                conn.execute(f"DELETE FROM {table} WHERE list_key = ?", found)

        await self._write(op)
