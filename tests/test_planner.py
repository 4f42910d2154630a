"""Batch planning: de-duplication and chunking by recipient count and body bytes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from imgate.pipeline.planner import dedupe, plan_chunks
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import Capabilities, IdRule, IdUnit, VendorLimits, VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    FieldViolation,
    Translator,
    VendorRequest,
)
from imgate.vendors.tencent.translator import MAX_BODY_BYTES, TencentTranslator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator


@pytest.mark.parametrize(
    ("ids", "unique", "duplicates"),
    [
        ([], [], 0),
        (["a"], [(0, "a")], 0),
        (["a", "b", "a", "c", "b", "b"], [(0, "a"), (1, "b"), (3, "c")], 3),
        (["x", "x", "x"], [(0, "x")], 2),
        (["b", "a", "B", "A", "a"], [(0, "b"), (1, "a"), (2, "B"), (3, "A")], 1),  # exact
        (["张三", "张三 ", "张三"], [(0, "张三"), (1, "张三 ")], 1),
    ],
)
def test_dedupe(ids: list[str], unique: list[tuple[int, str]], duplicates: int) -> None:
    result = dedupe(ids)
    assert list(zip(result.indexes, result.ids, strict=True)) == unique
    assert result.duplicates_removed == duplicates


def test_dedupe_takes_a_repeated_field() -> None:
    request = pb.BatchSendRequest(recipient_ids=["a", "b", "a"])
    result = dedupe(request.recipient_ids)
    assert (list(result.indexes), result.ids, result.duplicates_removed) == ([0, 1], ["a", "b"], 1)


class FakeTranslator(Translator):
    """A byte-capped vendor with round numbers: base 10 bytes, an id costs len + 1."""

    spec: ClassVar[VendorSpec] = VendorSpec(
        vendor="fake",
        display_name="Fake",
        path="/fake",
        limits=VendorLimits(
            recipients_per_call=5,
            call_limit=1,
            call_window_s=1.0,
            recipient_limit=0,
            recipient_window_s=1.0,
            block_s=1.0,
            vendor_block_s=1.0,
            max_body_bytes=30,
        ),
        id_rule=IdRule(32, IdUnit.UTF8),
        credential_fields={"key": str},
        app_id_field="key",
        sandbox_credentials={"key": "k"},
        sender_required=False,
        capabilities=Capabilities(
            reports_unknown_recipients=False,
            online_only=False,
            skip_moderation=False,
            read_receipt=False,
            custom_sub_type=False,
            message_ids=False,
        ),
    )

    def validate(self, request: pb.BatchSendRequest) -> list[FieldViolation]:
        return []

    def prepare(self, request: pb.BatchSendRequest) -> Any:
        return None

    def base_body_bytes(self, prepared: Any) -> int:
        return 10

    def recipient_body_bytes(self, recipient_id: str) -> int:
        return len(recipient_id) + 1

    def build(
        self, prepared: Any, recipients: Sequence[str], chunk_key: str, now: float, nonce: str
    ) -> VendorRequest:
        raise NotImplementedError

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("ids", "per_call", "sizes"),
    [
        ([], 5, []),
        (["a"], 5, [1]),
        (["a"] * 12, 5, [5, 5, 2]),  # 2 bytes each: the count binds
        (["a"] * 12, 3, [3, 3, 3, 3]),
        (["a"] * 10, 5, [5, 5]),  # no empty trailing chunk
        (["abcd"] * 9, 5, [4, 4, 1]),  # 5 bytes each, budget 20: the bytes bind
        (["abcdefghi", "a", "abcdefghi", "a"], 5, [2, 2]),  # 10 + 2 = 12 ≤ 20; +10 > 20
        (["a" * 19, "a"], 5, [1, 1]),  # exactly the budget
        (["a" * 25, "b", "c"], 5, [1, 2]),  # too long for any body: alone, not dropped
        (["a"] * 4, 0, [1, 1, 1, 1]),  # a nonsensical cap still makes progress
    ],
)
def test_plan_chunks_greedy(ids: list[str], per_call: int, sizes: list[int]) -> None:
    assert plan_chunks(FakeTranslator({}), None, ids, per_call) == sizes


def _text_request(text: str, **options: Any) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        sender_id="dave",
        recipient_ids=["a"],
        message=pb.Message(text=pb.TextContent(text=text)),
        options=pb.SendOptions(**options),
    )


@pytest.mark.parametrize(
    ("cls", "options", "configured", "total", "sizes"),
    [
        (YunxinV1Translator, {}, 500, 1201, [500, 500, 201]),
        (YunxinV1Translator, {"return_message_ids": True}, 500, 250, [100, 100, 50]),
        (YunxinV1Translator, {"return_message_ids": True}, 60, 130, [60, 60, 10]),
        (YunxinV2Translator, {}, 100, 250, [100, 100, 50]),
        (TencentTranslator, {}, 500, 1000, [500, 500]),  # short ids: only the count binds
    ],
)
def test_plan_chunks_with_vendor_caps(
    cls: type[Translator], options: dict[str, Any], configured: int, total: int, sizes: list[int]
) -> None:
    translator = cls(cls.spec.sandbox_credentials)
    prepared = translator.prepare(_text_request("hi", **options))
    ids = [f"user{i}" for i in range(total)]
    assert plan_chunks(translator, prepared, ids, configured) == sizes


def test_tencent_bytes_bind_near_the_cap() -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    prepared = translator.prepare(_text_request("中" * 3000))  # 9000 bytes of text
    ids = [f"{i:032d}" for i in range(600)]  # 35 bytes each in the body
    sizes = plan_chunks(translator, prepared, ids, 500)
    budget = MAX_BODY_BYTES - translator.base_body_bytes(prepared)
    assert sizes[:-1] == [budget // 35] * (len(sizes) - 1)
    assert sum(sizes) == 600
    start = 0
    for size in sizes:
        body = translator.build(prepared, ids[start : start + size], "k", 0.0, "n").body
        assert len(body) <= MAX_BODY_BYTES
        assert len(json.loads(body)["To_Account"]) == size
        start += size


def test_plans_a_maximal_batch() -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    prepared = translator.prepare(_text_request("hello"))
    ids = [f"user_{i:06d}" for i in range(100_000)]
    unique = dedupe(ids + ids[:10])
    assert unique.duplicates_removed == 10
    sizes = plan_chunks(translator, prepared, unique.ids, 500)
    assert sizes == [500] * 200
