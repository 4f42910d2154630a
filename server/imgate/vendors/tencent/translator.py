"""Tencent Cloud IM batch send: `POST /v4/openim/batchsendmsg` with a JSON body capped at
12 KB and the admin's UserSig in the query (vendors.md §2.2, §4.3, §7.3, §8.2;
docs/vendor-mapping.md). The element is built by `body`, the answer read by `answers`.

The body is assembled from pre-encoded bytes so that its size is known exactly before it
is built: `base_body_bytes` + the sum of `recipient_body_bytes` bounds it from above, and
the planner cuts chunks by that bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.common import (
    chosen_options,
    compact_json,
    derived_uint32,
    json_object,
    json_object_problem,
    message_violations,
)
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    FieldViolation,
    Translator,
    VendorRequest,
)
from imgate.vendors.tencent.admin import AdminAuth
from imgate.vendors.tencent.answers import parse_answer
from imgate.vendors.tencent.body import PUSH_OBJECTS, element, tencent_violations
from imgate.vendors.tencent.spec import SPEC

MAX_BODY_BYTES: Final = SPEC.limits.max_body_bytes or 0
"""Whole JSON packet; over it the vendor answers 93000 (vendors.md §5)."""


_UINT32_MAX: Final = 0xFFFFFFFF

# The body is `{"To_Account":[...],"MsgSeq":N,"MsgRandom":N,` + the batch part. The
# batch part is encoded once; the head is counted with MsgSeq/MsgRandom at their widest.
_HEAD_MAX: Final = b'{"To_Account":[],"MsgSeq":%d,"MsgRandom":%d,' % (_UINT32_MAX, _UINT32_MAX)

# Ids that JSON writes verbatim: then an id costs its UTF-8 length + 2 quotes + 1 comma.
_NEEDS_ESCAPE: Final = re.compile(r'[\x00-\x1f"\\]')


@dataclass(frozen=True, slots=True)
class TencentPrepared:
    """The batch part of the body, encoded once."""

    body_rest: bytes
    """The members after MsgRandom, closing brace included."""
    base_body_bytes: int


class TencentTranslator(Translator):
    """Tencent Cloud IM batch P2P send (batchsendmsg)."""

    spec: ClassVar[VendorSpec] = SPEC

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._auth = AdminAuth(credentials)

    def validate(
        self,
        request: pb.BatchSendRequest,
        recipient_ids: Sequence[str] | None = None,
        census: IdCensus | None = None,
    ) -> list[FieldViolation]:
        ids = list(request.recipient_ids) if recipient_ids is None else recipient_ids
        census = census or IdCensus.of(ids)
        # Ids over the spec's id rule are api.validate's violations already.
        problems = message_violations(request)
        problems += tencent_violations(request)
        for name in PUSH_OBJECTS:
            if request.options.HasField(name):  # type: ignore[arg-type]
                problem = json_object_problem(getattr(request.options, name))
                if problem:
                    problems.append(FieldViolation(f"options.{name}", problem))
        if problems or request.message.WhichOneof("content") is None:
            return problems  # the body cannot be encoded before these are fixed
        prepared = self.prepare(request)
        # Every recipient must fit alone, or the planner could not place it: check the
        # longest actual id, and at least one as long as the id rule allows.
        longest = max(
            self.recipient_body_bytes("x" * SPEC.id_rule.max_length),
            _longest_body_bytes(self, ids, census),
        )
        size = prepared.base_body_bytes + longest
        if size > MAX_BODY_BYTES:
            problems.append(
                FieldViolation(
                    "message",
                    f"the Tencent request body would be {size} bytes with a single"
                    f" recipient; the vendor's limit is {MAX_BODY_BYTES} bytes",
                )
            )
        return problems

    def prepare(self, request: pb.BatchSendRequest) -> TencentPrepared:
        message, options = request.message, request.options
        chosen = chosen_options(options)
        doc: dict[str, Any] = {}
        if request.sender_id:
            doc["From_Account"] = request.sender_id
        if "sync_to_sender" in chosen:
            doc["SyncOtherMachine"] = 1 if options.sync_to_sender else 2
        doc["MsgBody"] = [element(message)]
        # Only online_only means "online recipients only"; offline_enabled=false or
        # history_enabled=false without it is refused by validate() (issues 13.3, 22).
        if options.online_only:
            doc["OnlineOnlyFlag"] = 1
        if message.extension:
            doc["CloudCustomData"] = message.extension
        control = [
            flag
            for flag, wanted in (
                ("NoUnread", chosen.get("unread_enabled") is False),
                ("NoLastMsg", chosen.get("update_conversation") is False),
                ("NoMsgCheck", options.skip_moderation),
            )
            if wanted
        ]
        if control:
            doc["SendMsgControl"] = control
        push: dict[str, Any] = {}
        if "push_enabled" in chosen:
            push["PushFlag"] = 0 if options.push_enabled else 1
        if "push_title" in chosen:
            push["Title"] = options.push_title
        if "push_content" in chosen:
            push["Desc"] = options.push_content
        if "push_payload" in chosen:
            push["Ext"] = options.push_payload
        for name, member in PUSH_OBJECTS.items():
            if name in chosen:
                push[member] = json_object(chosen[name])
        if push:
            doc["OfflinePushInfo"] = push
        if "read_receipt" in chosen:
            doc["IsNeedReadReceipt"] = 1 if options.read_receipt else 0
        body_rest = compact_json(doc).encode()[1:]
        return TencentPrepared(body_rest, len(_HEAD_MAX) + len(body_rest))

    def base_body_bytes(self, prepared: TencentPrepared) -> int:
        return prepared.base_body_bytes

    def recipient_body_bytes(self, recipient_id: str) -> int:
        return len(compact_json(recipient_id).encode()) + 1  # + the comma before it

    def recipients_body_bytes(self, recipient_ids: Sequence[str]) -> list[int]:
        # One regex pass over all ids instead of a JSON encode per id: 100,000 ids must
        # plan in a few milliseconds.
        joined = "".join(recipient_ids)
        if not _NEEDS_ESCAPE.search(joined):
            if joined.isascii():  # one byte a character: no encoding needed
                return [len(recipient_id) + 3 for recipient_id in recipient_ids]
            return [len(recipient_id.encode()) + 3 for recipient_id in recipient_ids]
        return [self.recipient_body_bytes(recipient_id) for recipient_id in recipient_ids]

    def build(
        self,
        prepared: TencentPrepared,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        # Stable per chunk: the vendor de-duplicates on MsgSeq/MsgRandom (vendors.md §9).
        msg_seq = derived_uint32(chunk_key, "tencent-msgseq")
        msg_random = derived_uint32(chunk_key, "tencent-msgrandom")
        body = b"".join(
            (
                b'{"To_Account":',
                compact_json(list(recipients)).encode(),
                b',"MsgSeq":%d,"MsgRandom":%d,' % (msg_seq, msg_random),
                prepared.body_rest,
            )
        )
        query = self._auth.query(now, nonce)
        return VendorRequest(
            method="POST",
            path=SPEC.path,
            headers={"Content-Type": "application/json"},
            body=body,
            query=query,
        )

    def invalidate_credentials(self) -> None:
        self._auth.forget()

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        return parse_answer(recipients, status, body)


def _longest_body_bytes(translator: TencentTranslator, ids: Sequence[str], census: IdCensus) -> int:
    """The most bytes one of `ids` adds to a body (what recipients_body_bytes would max)."""
    # Printable ASCII but '"' and '\\' encodes as itself; str methods beat the regex.
    joined = census.joined
    if census.printable_ascii and '"' not in joined and "\\" not in joined:
        return census.longest + 3  # quotes and comma
    return max(translator.recipients_body_bytes(ids), default=0)
