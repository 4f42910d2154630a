"""Builds requests from the clients' friendly arguments (shared by sync and async)."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from typing import IO, TypedDict

import grpc

from imgate.v1 import gateway_pb2

Metadata = Sequence[tuple[str, str | bytes]]
"""Call metadata (headers): ``[("authorization", "Bearer ..."), ...]``."""


class SendOptionFields(TypedDict, total=False):
    """``gateway_pb2.SendOptions`` fields as keyword arguments; an absent key keeps the
    vendor's default. Newer fields are always reachable through a ``SendOptions`` object."""

    push_enabled: bool
    push_content: str
    push_title: str
    push_payload: str
    offline_enabled: bool
    history_enabled: bool
    unread_enabled: bool
    sync_to_sender: bool
    update_conversation: bool
    skip_moderation: bool
    online_only: bool
    read_receipt: bool
    return_message_ids: bool


def build_batch_send_request(
    recipients: Iterable[str],
    message: gateway_pb2.Message,
    *,
    backend: str,
    sender_id: str,
    request_id: str,
    options: gateway_pb2.SendOptions | None,
    option_fields: SendOptionFields,
) -> gateway_pb2.BatchSendRequest:
    """The request for ``batch_send``; keyword ``option_fields`` win over ``options``."""
    if isinstance(recipients, str | bytes):
        # A lone id would otherwise be sent as one recipient per character.
        raise TypeError("recipients must be an iterable of ids, not a single string")
    if not isinstance(message, gateway_pb2.Message):
        raise TypeError(
            "message must be a gateway_pb2.Message; build one with text(), tip(), custom(), ..."
        )
    merged_options = gateway_pb2.SendOptions()
    if options is not None:
        merged_options.CopyFrom(options)
    # Optional fields have presence, so MergeFrom copies exactly the keywords that were given.
    merged_options.MergeFrom(gateway_pb2.SendOptions(**option_fields))
    return gateway_pb2.BatchSendRequest(
        request_id=request_id,
        backend=backend,
        sender_id=sender_id,
        recipient_ids=list(recipients),
        message=message,
        options=merged_options if merged_options.ListFields() else None,
    )


def call_metadata(
    metadata: Metadata | None, token: str | None = None
) -> tuple[tuple[str, str | bytes], ...] | None:
    """grpc wants metadata as a tuple of pairs; `token` adds `authorization: Bearer`."""
    pairs = tuple(metadata or ())
    if token:
        pairs = (("authorization", f"Bearer {token}"), *pairs)
    return pairs if pairs or metadata is not None else None


def tls_credentials(
    credentials: grpc.ChannelCredentials | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
) -> grpc.ChannelCredentials | None:
    """Channel credentials from PEM files: `ca_file` = the CA that signed the gateway's
    certificate (default: the system's roots), `cert_file` + `key_file` = this client's
    certificate for mTLS. None (plaintext) when none is given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together (a client certificate and its key)")
    if ca_file is None and cert_file is None:
        return credentials
    if credentials is not None:
        raise ValueError("give either credentials or ca_file/cert_file/key_file, not both")

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as file:
            return file.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file),
        private_key=read(key_file),
        certificate_chain=read(cert_file),
    )


DEFAULT_PAGE_SIZE = 10_000
"""Ids per UploadRecipients message: ~150 KB, far under gRPC's 4 MB message limit."""

Recipients = Iterable[str] | IO[str] | str | os.PathLike[str]
"""What ``upload_recipients`` takes: ids, a text file of one id per line, or its path."""


def _ids_from(recipients: Recipients) -> Iterable[str]:
    """The ids of ``recipients``, lazily: a file is read line by line, never whole."""
    if isinstance(recipients, str | os.PathLike):
        return _lines_of_path(os.fspath(recipients))
    if isinstance(recipients, io.TextIOBase):
        return _lines(recipients)
    if isinstance(recipients, bytes):
        raise TypeError("recipients must be ids, a text file or a path, not bytes")
    return recipients


def _lines_of_path(path: str) -> Iterator[str]:
    # utf-8-sig: files saved by spreadsheet tools often start with a byte-order mark.
    with open(path, encoding="utf-8-sig") as file:
        yield from _lines(file)


def _lines(file: Iterable[str]) -> Iterator[str]:
    """One id per line; surrounding whitespace and blank lines are not ids."""
    for line in file:
        stripped = line.strip()
        if stripped:
            yield stripped


def upload_pages(
    recipients: Recipients, page_size: int, request_id: str
) -> Iterator[gateway_pb2.UploadRecipientsRequest]:
    """UploadRecipients messages of ``page_size`` ids, built as the stream asks for them.

    A ``str`` is taken as a path here (a lone id makes no list worth uploading)."""
    if page_size <= 0:
        raise ValueError("page_size must be positive")
    page: list[str] = []
    first = True
    for recipient in _ids_from(recipients):
        page.append(recipient)
        if len(page) == page_size:
            yield gateway_pb2.UploadRecipientsRequest(
                request_id=request_id if first else "", recipient_ids=page
            )
            page, first = [], False
    if page or first:  # an empty source still says so: the gateway refuses an empty list
        yield gateway_pb2.UploadRecipientsRequest(
            request_id=request_id if first else "", recipient_ids=page
        )


async def aupload_pages(
    recipients: Recipients | AsyncIterable[str], page_size: int, request_id: str
) -> AsyncIterator[gateway_pb2.UploadRecipientsRequest]:
    """``upload_pages`` for an async iterable of ids too."""
    if not isinstance(recipients, AsyncIterable):
        for request in upload_pages(recipients, page_size, request_id):
            yield request
        return
    if page_size <= 0:
        raise ValueError("page_size must be positive")
    page: list[str] = []
    first = True
    async for recipient in recipients:
        page.append(recipient)
        if len(page) == page_size:
            yield gateway_pb2.UploadRecipientsRequest(
                request_id=request_id if first else "", recipient_ids=page
            )
            page, first = [], False
    if page or first:
        yield gateway_pb2.UploadRecipientsRequest(
            request_id=request_id if first else "", recipient_ids=page
        )


def build_submit_request(
    recipients: Iterable[str] | gateway_pb2.RecipientList,
    message: gateway_pb2.Message,
    *,
    backend: str,
    sender_id: str,
    request_id: str,
    options: gateway_pb2.SendOptions | None,
    option_fields: SendOptionFields,
    send_before: float | None,
    recipient_list: str,
    send_after: float | None = None,
) -> gateway_pb2.SubmitBatchRequest:
    """The request for ``submit_batch``: ids, or a list (its id, or the RecipientList)."""
    if isinstance(recipients, gateway_pb2.RecipientList):
        if recipient_list:
            raise TypeError("give a RecipientList or recipient_list, not both")
        recipient_list, recipients = recipients.recipient_list, ()
    send = build_batch_send_request(
        recipients,
        message,
        backend=backend,
        sender_id=sender_id,
        request_id=request_id,
        options=options,
        option_fields=option_fields,
    )
    # Fields 1-6 have the same numbers in both messages.
    request = gateway_pb2.SubmitBatchRequest.FromString(send.SerializeToString())
    request.recipient_list = recipient_list
    if send_before is not None:
        request.send_before.FromNanoseconds(int(send_before * 1e9))
    if send_after is not None:
        request.send_after.FromNanoseconds(int(send_after * 1e9))
    return request
