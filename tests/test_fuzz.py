"""Property tests over hostile vendor answers (CONTRACT §8 rule 24) and hostile requests
(rule 23): one result per recipient, never ACCEPTED or FAILED for what the gateway cannot
account for, and a request is either refused with violations or encodes — never a crash."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgate.api.validate import validate_common, validate_for_vendor
from imgate.config.load import sandbox_config
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors._yunxin import translator as _yunxin
from imgate.vendors.base.translator import CallResult, Disposition, Translator
from imgate.vendors.tencent import answers as tencent_module
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator

RECIPIENTS = ["alice", "bob", "carol"]
OTHERS = ["mallory", "", "alice ", "ALICE"]
ACCOUNTS = RECIPIENTS + OTHERS

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(ACCOUNTS)
)
json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "code", "data", "To_Account"]), children, max_size=4
        )
    ),
    max_leaves=12,
)
codes = st.sampled_from(
    [0, 200, 404, 414, 416, 500, 503, 70107, 70169, 90992, 91000, 102404, 102449, 107323]
) | st.integers(min_value=-5, max_value=2_000_000)
accounts = st.sampled_from(ACCOUNTS) | st.integers() | st.none()
code_values = codes | codes.map(str) | st.none() | st.text(max_size=4) | st.booleans()

tencent_answers = st.fixed_dictionaries(
    {},
    optional={
        "ActionStatus": st.sampled_from(["OK", "FAIL", "SomeError"]) | json_values,
        "ErrorCode": code_values,
        "ErrorInfo": st.text(max_size=10) | json_values,
        "MsgKey": st.text(max_size=10) | json_values,
        "ErrorList": st.lists(
            st.fixed_dictionaries({}, optional={"To_Account": accounts, "ErrorCode": code_values})
            | json_values,
            max_size=5,
        )
        | json_values,
    },
)
_v2_items = st.fixed_dictionaries(
    {},
    optional={
        "receiver_id": accounts,
        "account_id": accounts,
        "message_server_id": st.integers() | st.text(max_size=5) | json_values,
        "create_time": st.integers() | json_values,
        "error_code": code_values,
        "error_msg": st.text(max_size=5),
    },
)
yunxin_v2_answers = st.fixed_dictionaries(
    {},
    optional={
        "code": code_values,
        "msg": st.text(max_size=5),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "success_list": st.lists(_v2_items | json_values, max_size=5) | json_values,
                "failed_list": st.lists(_v2_items | json_values, max_size=5) | json_values,
            },
        )
        | json_values,
    },
)
yunxin_v1_answers = st.fixed_dictionaries(
    {},
    optional={
        "code": code_values,
        "desc": st.text(max_size=5),
        "unregister": st.lists(accounts, max_size=4) | json_values,
        "msgids": st.dictionaries(st.sampled_from(ACCOUNTS), st.integers() | json_values)
        | json_values,
        "timetag": st.integers() | json_values,
    },
)


# Plausible answers (the shape the vendor documents, with real codes and accounts) are
# drawn often, so the success paths, partial lists and per-recipient codes are exercised,
# not only the garbage.
_plausible_codes = st.sampled_from([0, 200, 200, 404, 70107, 70169, 102404, 102449, 12345])
plausible_tencent = st.fixed_dictionaries(
    {
        "ActionStatus": st.sampled_from(["OK", "SomeError", "FAIL"]),
        "ErrorCode": st.sampled_from([0, 0, 0, 90012, 70169, 60007, 424242]),
        "MsgKey": st.sampled_from(["1_2_3", ""]),
    },
    optional={
        "ErrorList": st.lists(
            st.fixed_dictionaries(
                {"To_Account": st.sampled_from(ACCOUNTS), "ErrorCode": _plausible_codes}
            ),
            max_size=4,
        )
    },
)
_plausible_v2_success = st.fixed_dictionaries(
    {
        "receiver_id": st.sampled_from(ACCOUNTS),
        "message_server_id": st.integers(min_value=0, max_value=2**63),
        "create_time": st.integers(min_value=0, max_value=2**42),
    }
)
_plausible_v2_failed = st.builds(
    lambda key, account, code: {key: account, "error_code": code, "error_msg": "m"},
    st.sampled_from(["account_id", "receiver_id"]),
    st.sampled_from(ACCOUNTS),
    _plausible_codes,
)
plausible_v2 = st.fixed_dictionaries(
    {
        "code": st.sampled_from([200, 200, 200, 107323, 102449, 414, 777]),
        "msg": st.just("success"),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "success_list": st.lists(_plausible_v2_success, max_size=4),
                "failed_list": st.lists(_plausible_v2_failed, max_size=3),
            },
        ),
    }
)
plausible_v1 = st.fixed_dictionaries(
    {"code": st.sampled_from([200, 200, 200, 416, 500, 414, 777])},
    optional={
        "unregister": st.lists(st.sampled_from(ACCOUNTS), max_size=3, unique=True),
        "msgids": st.dictionaries(st.sampled_from(ACCOUNTS), st.integers(min_value=0)),
        "timetag": st.integers(min_value=0, max_value=2**42),
    },
)


def _bodies(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    as_json = structured.map(lambda doc: json.dumps(doc).encode())
    # Lists typed as JSON text, as the legacy page documents them.
    stringly = structured.map(
        lambda doc: json.dumps(
            {k: json.dumps(v) if k in ("unregister", "msgids") else v for k, v in doc.items()}
        ).encode()
    )
    junk = st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.just(b"x" * 100_000),
        st.just(b""),
    )
    return st.one_of(as_json, as_json, as_json, stringly, junk)


statuses = st.one_of(
    st.just(200),
    st.just(200),
    st.just(200),
    st.sampled_from([204, 301, 400, 403, 404, 429, 500, 502, 503, 504]),
    st.integers(min_value=100, max_value=599),
)

DOCUMENTED = {
    "tencent": {str(c) for c in (*tencent_module.CODES, *tencent_module.RECIPIENT_REASONS)},
    "yunxin_v1": {str(c) for c in _yunxin.CODES},
    "yunxin_v2": {str(c) for c in (*_yunxin.V2_CODES, *_yunxin.RECIPIENT_REASONS)},
}


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _check_answer(vendor: str, result: CallResult, status: int, body: bytes) -> None:
    if result.disposition is not Disposition.DONE:
        assert result.results == ()
        if result.disposition is Disposition.RETRY:
            assert status == 502 or (status == 200 and vendor != "tencent")
        return
    assert [r.recipient_id for r in result.results] == RECIPIENTS  # one each, in order
    answer = _load(body)
    assert status == 200
    assert isinstance(answer, dict)
    if _names_strangers(vendor, answer):
        # A list that does not match the call accounts for nobody (rule 24).
        assert all(item.uncertain and not item.accepted for item in result.results)
    for item in result.results:
        if item.accepted:
            _check_accepted(vendor, item.recipient_id, answer)
        elif not item.uncertain:
            # FAILED only for a code the vendor documents (or v1's unregister list).
            if vendor == "yunxin_v1" and item.vendor_code == "":
                unregister = answer["unregister"]
                if isinstance(unregister, str):
                    unregister = json.loads(unregister)
                assert item.recipient_id in unregister
            else:
                assert item.vendor_code in DOCUMENTED[vendor], item


def _listed_accounts(vendor: str, answer: dict[str, Any]) -> list[Any]:
    """Every account the answer's per-recipient lists name (as given)."""

    def items(value: Any) -> list[Any]:
        if isinstance(value, str):
            value = _load(value.encode())
        if isinstance(value, dict):
            return list(value)
        return value if isinstance(value, list) else []

    if vendor == "tencent":
        return [
            e.get("To_Account") if isinstance(e, dict) else e
            for e in items(answer.get("ErrorList"))
        ]
    if vendor == "yunxin_v1":
        return items(answer.get("unregister")) + items(answer.get("msgids"))
    data = answer.get("data")
    if not isinstance(data, dict):
        return []
    found = []
    for key in ("success_list", "failed_list"):
        for entry in items(data.get(key)):
            if isinstance(entry, dict):
                found.append(entry.get("receiver_id", entry.get("account_id")))
            else:
                found.append(entry)
    return found


def _names_strangers(vendor: str, answer: dict[str, Any]) -> bool:
    """Whether lists the translator reads name accounts outside the call (Yunxin reads
    its lists only on success; Tencent reads ErrorList on every answer)."""
    if vendor != "tencent" and str(answer.get("code")).strip() != "200":
        return False
    return any(account not in RECIPIENTS for account in _listed_accounts(vendor, answer))


def _check_accepted(vendor: str, recipient: str, answer: dict[str, Any]) -> None:
    if vendor == "tencent":
        assert str(answer["ErrorCode"]).strip() in ("0", "-0")
        listed = answer.get("ErrorList") or []
        assert recipient not in [e.get("To_Account") for e in listed]
        # An error status with nobody listed says someone failed, not who.
        assert answer.get("ActionStatus") == "OK" or listed
    elif vendor == "yunxin_v2":
        assert str(answer["code"]).strip() == "200"
        success = answer["data"]["success_list"]
        assert recipient in [item["receiver_id"] for item in success]
    else:
        assert str(answer["code"]).strip() == "200"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    body=st.one_of(
        _bodies(plausible_tencent), _bodies(plausible_tencent), _bodies(tencent_answers)
    ),
)
def test_fuzz_tencent_answers(status: int, body: bytes) -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    _check_answer("tencent", translator.parse(RECIPIENTS, status, body), status, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    body=st.one_of(_bodies(plausible_v2), _bodies(plausible_v2), _bodies(yunxin_v2_answers)),
)
def test_fuzz_yunxin_v2_answers(status: int, body: bytes) -> None:
    translator = YunxinV2Translator(YunxinV2Translator.spec.sandbox_credentials)
    _check_answer("yunxin_v2", translator.parse(RECIPIENTS, status, body), status, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=statuses,
    body=st.one_of(_bodies(plausible_v1), _bodies(plausible_v1), _bodies(yunxin_v1_answers)),
)
def test_fuzz_yunxin_v1_answers(status: int, body: bytes) -> None:
    translator = YunxinV1Translator(YunxinV1Translator.spec.sandbox_credentials)
    _check_answer("yunxin_v1", translator.parse(RECIPIENTS, status, body), status, body)


# --- requests ---------------------------------------------------------------------------

_ids = st.text(max_size=40) | st.sampled_from(["bob", " bob", "bob\n", "\x00", "", "鲍勃"])
_numbers = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_doubles = st.floats(allow_nan=True, allow_infinity=True)
_json_texts = (
    json_values.map(json.dumps)
    | st.sampled_from(['{"a":1e400}', '{"a":NaN}', '{"a":' + "[" * 80 + "]" * 80 + "}", "{}"])
    | st.text(max_size=20)
)
_urls = st.sampled_from(
    ["https://cdn.example/a", "http://x/y", "javascript:alert(1)", "ftp://x/y", "", "https://"]
) | st.text(max_size=10)


def _variant() -> st.SearchStrategy[pb.ImageVariant]:
    return st.builds(
        pb.ImageVariant,
        url=_urls,
        md5=st.text(max_size=5),
        format=st.text(max_size=4),
        size_bytes=_numbers,
        width=_numbers,
        height=_numbers,
    )


_contents = st.one_of(
    st.builds(lambda t: pb.Message(text=pb.TextContent(text=t)), st.text(max_size=30)),
    st.builds(lambda t: pb.Message(tip=pb.TipContent(text=t)), st.text(max_size=30)),
    st.builds(
        lambda url, w, h, size, large: pb.Message(
            image=pb.ImageContent(url=url, width=w, height=h, size_bytes=size, large=large)
        ),
        _urls,
        _numbers,
        _numbers,
        _numbers,
        _variant(),
    ),
    st.builds(
        lambda url, dur: pb.Message(audio=pb.AudioContent(url=url, duration_ms=dur)),
        _urls,
        _numbers,
    ),
    st.builds(
        lambda url, w, thumb: pb.Message(video=pb.VideoContent(url=url, width=w, thumbnail=thumb)),
        _urls,
        _numbers,
        _variant(),
    ),
    st.builds(
        lambda lat, lng, title: pb.Message(
            location=pb.LocationContent(latitude=lat, longitude=lng, title=title)
        ),
        _doubles,
        _doubles,
        st.text(max_size=10),
    ),
    st.builds(
        lambda url, size: pb.Message(file=pb.FileContent(url=url, size_bytes=size)), _urls, _numbers
    ),
    st.builds(
        lambda data, sub, desc: pb.Message(
            custom=pb.CustomContent(data=data, sub_type=sub, description=desc)
        ),
        _json_texts,
        _numbers,
        st.text(max_size=10),
    ),
    st.just(pb.Message()),
)
_options = st.builds(
    pb.SendOptions,
    push_enabled=st.none() | st.booleans(),
    push_payload=st.none() | _json_texts,
    push_title=st.none() | st.text(max_size=5),
    offline_enabled=st.none() | st.booleans(),
    history_enabled=st.none() | st.booleans(),
    unread_enabled=st.none() | st.booleans(),
    online_only=st.none() | st.booleans(),
    read_receipt=st.none() | st.booleans(),
    skip_moderation=st.none() | st.booleans(),
    return_message_ids=st.none() | st.booleans(),
)
CONFIG = sandbox_config("http://127.0.0.1:9")
TRANSLATORS: dict[str, Translator] = {
    cls.spec.vendor: cls(cls.spec.sandbox_credentials)
    for cls in (YunxinV1Translator, YunxinV2Translator, TencentTranslator)
}


@pytest.mark.parametrize("vendor", sorted(TRANSLATORS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sender=_ids,
    recipients=st.lists(_ids, min_size=0, max_size=5),
    content=_contents,
    extension=st.none() | _json_texts,
    options=_options,
)
def test_fuzz_requests_are_refused_or_encode(
    vendor: str,
    sender: str,
    recipients: list[str],
    content: pb.Message,
    extension: str | None,
    options: pb.SendOptions,
) -> None:
    message = pb.Message()
    message.CopyFrom(content)
    if extension is not None:
        message.extension = extension
    request = pb.BatchSendRequest(
        backend=vendor,
        sender_id=sender,
        recipient_ids=recipients,
        message=message,
        options=options,
    )
    ids = list(request.recipient_ids)
    translator = TRANSLATORS[vendor]
    problems = validate_common(request, ids, CONFIG)
    problems += validate_for_vendor(request, ids, translator)
    for problem in problems:
        assert problem.field
        assert len(problem.description) < 400
    if problems:
        return
    prepared = translator.prepare(request)
    built = translator.build(prepared, ids, "k:0", 1_700_000_000.0, "n" * 32)
    if vendor == "yunxin_v1":
        form = parse_qs(built.body.decode(), strict_parsing=True)
        json.loads(form["body"][0])
        assert json.loads(form["toAccids"][0]) == ids
    else:
        doc = json.loads(built.body)
        assert (doc["To_Account"] if vendor == "tencent" else doc["receiver_ids"]) == ids


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=200))
def test_fuzz_request_bytes_decode_or_are_refused(raw: bytes) -> None:
    from imgate.api.decode import decode_request

    request = decode_request(raw, pb.BatchSendRequest)
    assert request is None or isinstance(request, pb.BatchSendRequest)
