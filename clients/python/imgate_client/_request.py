"""Builds ``BatchSendRequest`` from the clients' friendly arguments (shared by sync and async)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypedDict

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
