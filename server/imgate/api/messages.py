"""Building the API's response messages from stored rows and outcome pages."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from imgate.store.records import BatchRow, OutcomePage
from imgate.v1 import gateway_pb2 as pb

MAX_OUTCOMES_PER_MESSAGE = 2000  # ~100 KB per message, far under gRPC's 4 MB default

StreamType = type[pb.BatchSendResponse] | type[pb.WatchBatchResponse]


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def summary(row: BatchRow) -> pb.BatchSummary:
    end = row.end_time if row.end_time is not None else row.update_time
    return pb.BatchSummary(
        total=row.total,
        accepted=row.accepted,
        failed=row.failed,
        uncertain=row.uncertain,
        duplicates_removed=row.duplicates_removed,
        vendor_calls=row.vendor_calls,
        elapsed_ms=max(0, int((end - row.create_time) * 1000)),
    )


def batch_message(row: BatchRow) -> pb.Batch:
    batch = pb.Batch(
        batch_id=row.batch_id,
        request_id=row.request_id,
        backend=row.backend,
        state=pb.BatchState.ValueType(row.state),
        total=row.total,
        accepted=row.accepted,
        failed=row.failed,
        uncertain=row.uncertain,
        pending=row.pending,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )
    if row.ended:
        batch.summary.CopyFrom(summary(row))
    if row.send_after is not None:
        batch.send_after.CopyFrom(timestamp(row.send_after))
    if row.recall_of:
        batch.recall_of = row.recall_of
    if row.recalled_by:
        batch.recalled_by = row.recalled_by
    return batch


def groups(pages: list[OutcomePage]) -> list[list[OutcomePage]]:
    """Consecutive pages, up to MAX_OUTCOMES_PER_MESSAGE outcomes a group (at least one)."""
    found: list[list[OutcomePage]] = []
    count = 0
    for page in pages:
        if not found or count + page.count > MAX_OUTCOMES_PER_MESSAGE:
            found.append([])
            count = 0
        found[-1].append(page)
        count += page.count
    return found


def outcomes_message(group: list[OutcomePage], message_type: StreamType, batch_id: str) -> bytes:
    """One stream message of `group`'s outcomes, serialized.

    Stored pages are serialized messages with only `outcomes`, and serialized messages
    concatenate into one (repeated fields merge): a message is the pages' bytes plus the
    cursor field, never parsed and serialized again (issue 20).
    """
    tail = message_type(cursor=str(group[-1].seq))
    if batch_id and isinstance(tail, pb.BatchSendResponse):
        tail.batch_id = batch_id
    data = [page.data for page in group]
    data.append(tail.SerializeToString())
    return b"".join(data)


def last_message(
    row: BatchRow, after_seq: int, message_type: StreamType, batch_id: str, page: bytes = b""
) -> bytes:
    """The stream's last message: the summary (after `page`'s outcomes, if given)."""
    last = message_type(cursor=str(after_seq))
    last.summary.CopyFrom(summary(row))
    if batch_id and isinstance(last, pb.BatchSendResponse):
        last.batch_id = batch_id
    return page + last.SerializeToString()
