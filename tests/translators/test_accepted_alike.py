"""AcceptedAlike: the compact DONE results must mean exactly what the tuple they stand for
means, to the sink's outcome pages, the counts and the metrics."""

from __future__ import annotations

import json

import pytest

from imgate.pipeline.sink import Chunk, _vendor_results
from imgate.store.records import SENDING, ChunkRow
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Disposition,
    RecipientResult,
    count_states,
    not_accepted,
    uncertain_result,
)
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator

IDS = ["a", "b", "c", "d", "e"]
SHARED = RecipientResult("", True, detail="maybe", vendor_message_id="k1", vendor_time_ms=7)
EXCEPTIONS = {
    1: RecipientResult("b", False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, "40001", "gone"),
    3: uncertain_result("d", pb.FAILURE_REASON_VENDOR_ERROR, "x", "unclear"),
    4: RecipientResult("e", True, vendor_message_id="own", vendor_time_ms=9),
}


def _alike() -> AcceptedAlike:
    return AcceptedAlike(IDS, SHARED, EXCEPTIONS)


def test_reads_like_the_tuple_it_stands_for() -> None:
    alike = _alike()
    assert len(alike) == 5
    assert [r.recipient_id for r in alike] == IDS
    assert alike[0] == RecipientResult(
        "a", True, detail="maybe", vendor_message_id="k1", vendor_time_ms=7
    )
    assert alike[1] is EXCEPTIONS[1]
    assert alike[-1] is EXCEPTIONS[4]
    assert alike[2:4] == (alike[2], EXCEPTIONS[3])
    assert alike == tuple(alike)
    with pytest.raises(IndexError):
        alike[5]
    first, *_ = alike
    assert first.state == pb.DELIVERY_STATE_ACCEPTED


def test_counts_read_only_the_exceptions_and_agree_with_the_tuple() -> None:
    alike = _alike()
    assert count_states(alike) == count_states(tuple(alike)) == (3, 1, 1)
    assert [r.recipient_id for r in not_accepted(alike)] == ["b", "d"]


def test_shared_result_must_be_accepted() -> None:
    with pytest.raises(ValueError, match="must be accepted"):
        AcceptedAlike(IDS, RecipientResult("", False), {})


def _chunk(attempts: int = 2) -> Chunk:
    row = ChunkRow("b1", 0, 0, 5, SENDING, attempts=attempts)
    return Chunk(row, IDS, [10, 11, 12, 13, 14])


def test_sink_pages_are_the_same_as_from_the_tuple() -> None:
    alike = _alike()
    compact = _vendor_results(_chunk(), CallResult(Disposition.DONE, alike))
    plain = _vendor_results(_chunk(), CallResult(Disposition.DONE, tuple(alike)))
    assert compact.SerializeToString() == plain.SerializeToString()
    a, b, c, d, e = compact.outcomes
    assert (a.recipient_id, a.index, a.attempts, a.state) == (
        "a",
        10,
        2,
        pb.DELIVERY_STATE_ACCEPTED,
    )
    assert (a.vendor_message_id, a.vendor_time_ms, a.detail) == ("k1", 7, "maybe")
    assert (b.state, b.reason, b.vendor_code, b.vendor_message_id) == (
        pb.DELIVERY_STATE_FAILED,
        pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
        "40001",
        "",
    )
    assert d.state == pb.DELIVERY_STATE_UNCERTAIN
    assert d.index == 13
    assert (e.vendor_message_id, e.vendor_time_ms) == ("own", 9)
    assert c.vendor_message_id == "k1"


def test_sink_refuses_results_that_do_not_cover_the_chunk() -> None:
    short = AcceptedAlike(IDS[:4], SHARED, {})
    with pytest.raises(ValueError, match="4 results for a chunk of 5"):
        _vendor_results(_chunk(), CallResult(Disposition.DONE, short))


def test_tencent_success_with_an_error_list_is_compact_and_exact() -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    answer = {
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "MsgKey": "1_2_3",
        "ErrorList": [{"To_Account": "c", "ErrorCode": 70107}],
    }
    result = translator.parse(IDS, 200, json.dumps(answer).encode())
    assert isinstance(result.results, AcceptedAlike)
    assert list(result.results.exceptions) == [2]
    assert [(r.recipient_id, r.accepted, r.vendor_message_id) for r in result.results] == [
        ("a", True, "1_2_3"),
        ("b", True, "1_2_3"),
        ("c", False, ""),
        ("d", True, "1_2_3"),
        ("e", True, "1_2_3"),
    ]


def test_yunxin_v1_unregistered_and_message_ids_are_the_exceptions() -> None:
    translator = YunxinV1Translator(YunxinV1Translator.spec.sandbox_credentials)
    answer = {"code": 200, "unregister": '["b"]', "msgids": {"d": 42}, "timetag": 1700}
    result = translator.parse(IDS, 200, json.dumps(answer).encode())
    assert isinstance(result.results, AcceptedAlike)
    assert sorted(result.results.exceptions) == [1, 3]
    assert [(r.accepted, r.vendor_message_id, r.vendor_time_ms) for r in result.results] == [
        (True, "", 1700),
        (False, "", 0),
        (True, "", 1700),
        (True, "42", 1700),
        (True, "", 1700),
    ]
