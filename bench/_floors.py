"""Floor 3 and the start-up floor: what any gateway in CPython does that floors 1 and 2
leave out (issue 15: "show the measurement that proves it, the floor it hits").

Floor 1 builds the vendor bodies and sends them; floor 2 streams prebuilt outcomes. A
gateway must also, per recipient: turn the request's repeated field into strings, hash
them once (duplicates), and build one outcome message (upb, field by field: the cheapest
way from Python, see imgate/pipeline/sink.py). `outcome_floor` measures that, in this process,
on the bench's own request: nothing of the gateway's pipeline, store or event loop.

Before its first vendor call a durable gateway must also have checked every id and made
the batch durable: `startup_floor` times parse, list, hash, one scan of the ids, the
recipient pages encoded and committed to SQLite (WAL, synchronous=FULL), as one
sequence with nothing else around it.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench._workload import batch_request
from imgate.store.pages import encode_recipients
from imgate.store.records import RECIPIENT_PAGE
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus

_CHUNK = 500  # outcomes built per page, as one vendor call's
_MESSAGE_ID = "1234567890_2345678901_1700000000"  # Tencent's MsgKey shape


def outcome_floor(vendor: str, recipients: int, repeats: int) -> float:
    """CPU seconds per recipient (best of `repeats`) to parse the request, list and hash
    its ids and build one accepted outcome each, serialized in pages of _CHUNK."""
    data = batch_request(vendor, recipients).SerializeToString()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        request = pb.BatchSendRequest.FromString(data)
        ids = list(request.recipient_ids)
        unique = len(set(ids)) == len(ids)
        accepted = pb.DELIVERY_STATE_ACCEPTED
        for start in range(0, len(ids), _CHUNK):
            page = pb.BatchSendResponse()
            add = page.outcomes.add
            for index in range(start, min(start + _CHUNK, len(ids))):
                outcome = add()
                outcome.recipient_id = ids[index]
                outcome.index = index
                outcome.attempts = 1
                outcome.state = accepted
                outcome.vendor_message_id = _MESSAGE_ID
            page.SerializeToString()
        best = min(best, time.process_time() - started)
        assert unique
    return best / recipients


def startup_floor(recipients: int, repeats: int) -> float:
    """Median seconds from a request's bytes to its batch durable in SQLite."""
    data = batch_request("tencent", recipients).SerializeToString()
    walls = []
    with tempfile.TemporaryDirectory() as folder:
        conn = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE pages (batch TEXT, page INTEGER, ids TEXT, indexes TEXT)")
        for repeat in range(repeats):
            started = time.perf_counter()
            request = pb.BatchSendRequest.FromString(data)
            ids = list(request.recipient_ids)
            assert len(set(ids)) == len(ids)
            census = IdCensus.of(ids)
            assert census.printable_ascii
            pages = [
                (str(repeat), number, *encode_recipients(ids[start : start + RECIPIENT_PAGE], None))
                for number, start in enumerate(range(0, len(ids), RECIPIENT_PAGE))
            ]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO pages VALUES (?,?,?,?)", pages)
            conn.execute("COMMIT")
            walls.append(time.perf_counter() - started)
        conn.close()
    return statistics.median(walls)
