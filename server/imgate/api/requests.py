"""Reading a request before it becomes a batch: its payload's fingerprint, the form the
validators take, and a recipient list's widest id."""

from __future__ import annotations

import hashlib
from typing import Final

from google.protobuf import timestamp_pb2

from imgate.store.records import ListRow
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import FieldViolation


def widest(ids: list[str]) -> tuple[str, int, int]:
    """(id, bytes, position) of the first id taking the most bytes in a JSON body."""
    if not ids:
        return "", -1, 0
    joined = "".join(ids)
    if joined.isascii() and '"' not in joined and "\\" not in joined:
        sizes = list(map(len, ids))  # one byte per character, nothing escaped
    else:
        sizes = [len(i.encode()) + i.count('"') + i.count("\\") for i in ids]
    position = max(range(len(ids)), key=sizes.__getitem__)
    return ids[position], sizes[position], position


def in_list(problem: FieldViolation, recipients: ListRow) -> FieldViolation:
    """A violation found on the list's widest id, named as the list's."""
    if not problem.field.startswith("recipient_ids"):
        return problem
    return FieldViolation(
        "recipient_list",
        f"recipient {recipients.widest_index} of the list: {problem.description}",
    )


def as_send_request(request: pb.BatchSendRequest | pb.SubmitBatchRequest) -> pb.BatchSendRequest:
    """The request as the validators take it: a SubmitBatchRequest's fields 1-6 without the
    recipients (the caller holds them as a list)."""
    if isinstance(request, pb.BatchSendRequest):
        return request
    send = pb.BatchSendRequest(
        request_id=request.request_id, backend=request.backend, sender_id=request.sender_id
    )
    if request.HasField("message"):
        send.message.CopyFrom(request.message)
    if request.HasField("options"):
        send.options.CopyFrom(request.options)
    return send


_TIMES: Final = ("send_before", "send_after")


def fingerprint(request: pb.BatchSendRequest | pb.SubmitBatchRequest, backend: str) -> bytes:
    """Digest of the payload: everything but request_id and when to send (send_before,
    send_after: a retry of `--at 10m` names another time, and is the same batch), backend
    resolved. Fields 1-6 have the same numbers in both messages, so BatchSend and
    SubmitBatch with one payload serialize alike and are the same batch."""
    # Serialized in place, the excluded fields set aside and put back: a copy of the
    # request would copy its 100,000 ids once more (about 3 MB of peak memory).
    request_id, requested_backend = request.request_id, request.backend
    times: dict[str, timestamp_pb2.Timestamp] = {}
    if isinstance(request, pb.SubmitBatchRequest):
        for name in _TIMES:
            if request.HasField(name):
                times[name] = timestamp_pb2.Timestamp()
                times[name].CopyFrom(getattr(request, name))
                request.ClearField(name)
    request.request_id, request.backend = "", backend
    try:
        return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    finally:
        request.request_id, request.backend = request_id, requested_backend
        for name, stamp in times.items():
            getattr(request, name).CopyFrom(stamp)
