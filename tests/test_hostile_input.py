"""CONTRACT §8 rule 23 end to end: hostile requests are INVALID_ARGUMENT, nothing is sent,
and no error text shows a Python exception or echoes more than 64 characters of input."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imgate.api.validate import LIST_ID_RULE
from imgate.sandbox import SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import VENDORS, StartGateway, text_request

Edit = Callable[[pb.BatchSendRequest], None]


def _set(path: str, value: object) -> Edit:
    def edit(request: pb.BatchSendRequest) -> None:
        *parents, name = path.split(".")
        target = request
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return edit


def _recipient(value: str) -> Edit:
    def edit(request: pb.BatchSendRequest) -> None:
        request.recipient_ids.append(value)

    return edit


def _content(message: pb.Message) -> Edit:
    def edit(request: pb.BatchSendRequest) -> None:
        extension = request.message.extension
        request.message.CopyFrom(message)
        request.message.extension = extension

    return edit


def _options(**values: bool) -> Edit:
    def edit(request: pb.BatchSendRequest) -> None:
        request.options.MergeFrom(pb.SendOptions(**values))

    return edit


def _deep(depth: int) -> str:
    return '{"a":' + "[" * depth + "]" * depth + "}"


_IMAGE = pb.ImageContent(url="https://cdn.example/a.png", width=10, height=10)
_THUMB = pb.ImageVariant(url="https://cdn.example/t.jpg", width=4, height=3)

CASES: list[tuple[str, Edit, str]] = [
    ("recipient with NUL", _recipient("bob\x00"), "recipient_ids[1]"),
    ("recipient with newline", _recipient("bob\nINFO forged"), "recipient_ids[1]"),
    ("recipient with a C1 control", _recipient("bob\x85"), "recipient_ids[1]"),
    ("recipient of spaces", _recipient("   "), "recipient_ids[1]"),
    ("recipient with leading space", _recipient(" bob"), "recipient_ids[1]"),
    ("recipient with trailing tab", _recipient("bob\t"), "recipient_ids[1]"),
    ("recipient with a trailing ideographic space", _recipient("bob\u3000"), "recipient_ids[1]"),
    ("empty recipient", _recipient(""), "recipient_ids[1]"),
    # Format characters (Cf) and line/paragraph separators, anywhere (issue 22 item 5):
    # they were accepted inside an id.
    ("recipient with a bidi override", _recipient("bob\u202eevil"), "recipient_ids[1]"),
    ("recipient with a BOM", _recipient("\ufeffbob"), "recipient_ids[1]"),
    ("recipient with a zero-width space", _recipient("b\u200bob"), "recipient_ids[1]"),
    ("recipient with a soft hyphen", _recipient("b\u00adob"), "recipient_ids[1]"),
    ("recipient with a line separator", _recipient("bob\u2028x"), "recipient_ids[1]"),
    ("recipient with a paragraph separator", _recipient("bob\u2029x"), "recipient_ids[1]"),
    ("sender with a bidi override", _set("sender_id", "ops\u202e"), "sender_id"),
    ("sender with a zero-width joiner", _set("sender_id", "o\u200dps"), "sender_id"),
    ("sender with newline", _set("sender_id", "ops\r\n"), "sender_id"),
    ("sender of spaces", _set("sender_id", "  "), "sender_id"),
    ("request_id with a space", _set("request_id", "a b"), "request_id"),
    ("request_id too long", _set("request_id", "r" * 129), "request_id"),
    (
        "negative image size",
        _content(pb.Message(image=pb.ImageContent(url=_IMAGE.url, size_bytes=-1))),
        "message.image.size_bytes",
    ),
    (
        "negative image width",
        _content(pb.Message(image=pb.ImageContent(url=_IMAGE.url, width=-5, height=5))),
        "message.image.width",
    ),
    (
        "negative audio duration",
        _content(pb.Message(audio=pb.AudioContent(url=_IMAGE.url, duration_ms=-1000))),
        "message.audio.duration_ms",
    ),
    (
        "negative video height",
        _content(pb.Message(video=pb.VideoContent(url=_IMAGE.url, height=-1, thumbnail=_THUMB))),
        "message.video.height",
    ),
    (
        "negative thumbnail size",
        _content(
            pb.Message(
                video=pb.VideoContent(
                    url=_IMAGE.url,
                    thumbnail=pb.ImageVariant(url=_THUMB.url, width=4, height=3, size_bytes=-9),
                )
            )
        ),
        "message.video.thumbnail.size_bytes",
    ),
    (
        "negative file size",
        _content(pb.Message(file=pb.FileContent(url=_IMAGE.url, size_bytes=-2))),
        "message.file.size_bytes",
    ),
    (
        "latitude out of range",
        _content(pb.Message(location=pb.LocationContent(latitude=90.5))),
        "message.location.latitude",
    ),
    (
        "longitude infinite",
        _content(pb.Message(location=pb.LocationContent(longitude=float("inf")))),
        "message.location.longitude",
    ),
    (
        "latitude NaN",
        _content(pb.Message(location=pb.LocationContent(latitude=float("nan")))),
        "message.location.latitude",
    ),
    ("NaN in extension", _set("message.extension", '{"a": NaN}'), "message.extension"),
    ("Infinity in extension", _set("message.extension", '{"a": -Infinity}'), "message.extension"),
    (
        "number out of range in extension",
        _set("message.extension", '{"a": 1e400}'),
        "message.extension",
    ),
    (
        "integer out of range",
        _set("message.extension", '{"a": 99999999999999999999}'),
        "message.extension",
    ),
    ("extension nested 65 deep", _set("message.extension", _deep(64)), "message.extension"),
    (
        "extension nested 100000 deep",
        _set("message.extension", _deep(100_000)),
        "message.extension",
    ),
    (
        "lone surrogate in extension",
        _set("message.extension", '{"a": "\\ud800"}'),
        "message.extension",
    ),
    (
        "custom data 1e400 (was UNKNOWN)",
        _content(pb.Message(custom=pb.CustomContent(data='{"a":1e400}'))),
        "message.custom.data",
    ),
    (
        "custom data with NaN",
        _content(pb.Message(custom=pb.CustomContent(data='{"a":NaN}'))),
        "message.custom.data",
    ),
    (
        "custom data nested too deep",
        _content(pb.Message(custom=pb.CustomContent(data=_deep(70)))),
        "message.custom.data",
    ),
    ("NaN in push payload", _set("options.push_payload", '{"a": NaN}'), "options.push_payload"),
    # An object that repeats a key: which value a vendor's parser keeps is undocumented.
    ("extension repeating a key", _set("message.extension", '{"a":1,"a":2}'), "message.extension"),
    (
        "custom data repeating a nested key",
        _content(pb.Message(custom=pb.CustomContent(data='{"o":{"k":1,"k":1}}'))),
        "message.custom.data",
    ),
    (
        "push payload repeating a key",
        _set("options.push_payload", '{"pushTitle":"a","pushTitle":"b"}'),
        "options.push_payload",
    ),
    (
        "javascript: image URL",
        _content(pb.Message(image=pb.ImageContent(url="javascript:alert(1)", width=1, height=1))),
        "message.image.url",
    ),
    (
        "data: file URL",
        _content(pb.Message(file=pb.FileContent(url="data:text/html,<b>x</b>"))),
        "message.file.url",
    ),
    (
        "URL with a newline",
        _content(pb.Message(audio=pb.AudioContent(url="https://a.example/x\n.aac"))),
        "message.audio.url",
    ),
    (
        "javascript: thumbnail URL",
        _content(
            pb.Message(
                video=pb.VideoContent(
                    url=_IMAGE.url,
                    thumbnail=pb.ImageVariant(url="javascript:x", width=1, height=1),
                )
            )
        ),
        "message.video.thumbnail.url",
    ),
    (
        "online_only with history on",
        _options(online_only=True, history_enabled=True),
        "options.history_enabled",
    ),
]


def _status_text(error: grpc.aio.AioRpcError) -> tuple[str, list[tuple[str, str]]]:
    status = rpc_status.from_call(error)
    violations: list[tuple[str, str]] = []
    if status is not None:
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            assert detail.Unpack(bad_request)
            violations += [(v.field, v.description) for v in bad_request.field_violations]
    return error.details() or "", violations


def _assert_clean(text: str) -> None:
    for marker in ("Traceback", "Error:", "Exception", "<class", "DecodeError"):
        assert marker not in text, text


@pytest.mark.parametrize("backend", VENDORS)
@pytest.mark.parametrize(("name", "edit", "field"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_request_is_invalid_argument_and_nothing_is_sent(
    backend: str,
    name: str,
    edit: Edit,
    field: str,
    sandbox: SandboxServer,
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    request = text_request(["bob"], backend, sender_id="ops")
    edit(request)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text, violations = _status_text(error.value)
    assert field in [f for f, _ in violations], violations
    _assert_clean(text)
    assert sandbox.state.stats(backend).calls_received == 0


async def test_huge_backend_name_is_not_echoed_whole(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    request = text_request(["bob"], "yunxin_v1", sender_id="ops")
    request.backend = "B" * (1 << 20)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    text, violations = _status_text(error.value)
    for piece in [text, *(description for _, description in violations)]:
        assert "B" * 65 not in piece
    assert [f for f, _ in violations] == ["backend"]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff",  # not protobuf wire format
        b"\x1a\x03\xff\xfe\xfd",  # sender_id (field 3) that is not UTF-8
        b"\x22\x02\xc3\x28",  # a recipient id that is not UTF-8
        b"\x0a",  # truncated
    ],
)
async def test_undecodable_bytes_are_invalid_argument(
    raw: bytes, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    call = gateway.channel.unary_stream(
        "/imgate.v1.GatewayService/BatchSend",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in call(raw, timeout=10):
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_clean(error.value.details() or "")
    for vendor in VENDORS:
        assert sandbox.state.stats(vendor).calls_received == 0


async def test_undecodable_list_backends_is_invalid_argument(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    call = gateway.channel.unary_unary(
        "/imgate.v1.GatewayService/ListBackends",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(b"\xff\xff", timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_valid_bytes_still_work_through_the_raw_handler(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    _, outcomes, summary = await gateway.send(text_request(["bob"], "tencent"))
    assert summary.accepted == 1
    assert outcomes[0].state == pb.DELIVERY_STATE_ACCEPTED


_TOO_LONG = "x" * (LIST_ID_RULE.max_length + 1)  # more than any registered vendor takes


@pytest.mark.parametrize(
    ("ids", "bad"),
    [
        (["alice", "bob"], []),
        (["a b", "bob"], []),  # inner whitespace is not refused by the rule
        (["鲍勃", " 鲍勃", "鲍勃\u2028"], [1, 2]),  # U+2028 is whitespace too
        # Longer than every registered vendor takes (whichever vendors are registered).
        (
            ["alice", "bob ", "", "x" * (LIST_ID_RULE.max_length + 1), "c\x7f", "d\u0085"],
            [1, 2, 3, 4, 5],
        ),
        (["\u3000bob"], [0]),
        (["鲍\u202e勃", "鲍勃", "a\u2060", "x\U000e0041", "a\u3000b"], [0, 2, 3]),
    ],
)
def test_id_checks_fast_and_slow_paths_agree(ids: list[str], bad: list[int]) -> None:
    from imgate.api.validate import _bad_id_positions, id_problem

    assert _bad_id_positions(ids) == bad
    assert [i for i, value in enumerate(ids) if id_problem(value)] == bad


def test_every_format_and_separator_character_is_refused_in_ids() -> None:
    """Every character of Unicode categories Cc, Cf, Zl, Zp (as this Python's tables say)
    is refused inside an id, and no other character is (CONTRACT §8 rule 23)."""
    import sys
    import unicodedata

    from imgate.api.validate import INVISIBLE_CATEGORIES, has_invisible

    wrong = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if has_invisible(f"a{chr(code)}b")
        != (unicodedata.category(chr(code)) in INVISIBLE_CATEGORIES)
    ]
    assert wrong == []
