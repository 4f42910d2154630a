"""RongCloud private publish emulator: signature, formats, limits, rate and answers."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest

from imgate.sandbox import SandboxConfig
from imgate.vendors.rongcloud import rules
from imgate.vendors.rongcloud.emulator import RongCloudSettings

from .conftest import StartSandbox
from .helpers import Answer, Vendors

KEY, SECRET = "sandbox-app-key", "sandbox-app-secret"


def auth(
    *, now: float | None = None, nonce: str = "12345", secret: str = SECRET, prefix: str = ""
) -> dict[str, str]:
    stamp = str(int(time.time() if now is None else now))
    return {
        f"{prefix}App-Key": KEY,
        f"{prefix}Nonce": nonce,
        f"{prefix}Timestamp": stamp,
        f"{prefix}Signature": rules.signature(secret, nonce, stamp),
    }


def fields(
    to: list[str] | None = None,
    object_name: str = "RC:TxtMsg",
    content: Any = None,
    **extra: str,
) -> list[tuple[str, str]]:
    text = content if isinstance(content, str) else json.dumps(content or {"content": "hi"})
    pairs = [("fromUserId", "alice"), ("objectName", object_name), ("content", text)]
    pairs += [("toUserId", user) for user in (["bob", "carol"] if to is None else to)]
    return pairs + list(extra.items())


async def post(
    vendors: Vendors,
    form: list[tuple[str, str]] | str,
    headers: dict[str, str] | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> Answer:
    data = form if isinstance(form, str) else urlencode(form)
    all_headers = {**(auth() if headers is None else headers), "Content-Type": content_type}
    url = vendors.server.vendor_url("rongcloud")
    async with vendors.session.post(url, data=data, headers=all_headers) as response:
        text = await response.text()
        body = json.loads(text) if response.content_type == "application/json" else None
        return Answer(response.status, response.content_type, text, body)


async def test_delivers_and_answers_a_message_uid_per_distinct_recipient(
    vendors: Vendors,
) -> None:
    answer = await post(vendors, fields(to=["bob", "ghost1", "bob"]))
    assert answer.status == 200
    assert answer.body["code"] == 200
    uids = answer.body["messageUIDs"]
    assert [entry["userId"] for entry in uids] == ["bob", "ghost1"]
    assert all(len(entry["messageUID"]) == 19 for entry in uids)
    # The unknown account gets nothing, and the answer does not say so.
    delivered = vendors.server.state.deliveries("rongcloud")
    assert [(d.recipient, d.message_type) for d in delivered] == [("bob", "RC:TxtMsg")]
    assert delivered[0].message_id == uids[0]["messageUID"]


async def test_header_aliases_and_a_millisecond_timestamp_are_accepted(vendors: Vendors) -> None:
    assert (await post(vendors, fields(), auth(prefix="RC-"))).status == 200
    now_ms = time.time() * 1000
    assert (await post(vendors, fields(), auth(now=now_ms))).status == 200


@pytest.mark.parametrize(
    ("case", "headers", "code"),
    [
        ("no App-Key", {k: v for k, v in auth().items() if k != "App-Key"}, 1001),
        ("other App-Key", {**auth(), "App-Key": "other"}, 1001),
        ("wrong secret", auth(secret="wrong"), 1004),
        ("nonce of 19", auth(nonce="1" * 19), 1004),
        ("old timestamp", auth(now=time.time() - 301), 1004),
        ("timestamp not a number", {**auth(), "Timestamp": "soon"}, 1004),
        ("uppercase signature", {**auth(), "Signature": auth()["Signature"].upper()}, 1004),
    ],
)
async def test_auth_refusals_are_401(
    case: str, headers: dict[str, str], code: int, vendors: Vendors
) -> None:
    answer = await post(vendors, fields(), headers)
    assert (answer.status, answer.body["code"]) == (401, code), answer
    assert answer.body["errorMessage"]
    assert vendors.server.state.stats("rongcloud").calls_processed == 0


def _without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in fields() if k != name]


REFUSED: list[tuple[str, list[tuple[str, str]] | str, int]] = [
    ("empty body", "", 1003),
    ("no fromUserId", _without("fromUserId"), 1002),
    ("no toUserId", fields(to=[]), 1002),
    ("1001 toUserId", fields(to=[f"u{n}" for n in range(1001)]), 1002),
    ("toUserId with a dot", fields(to=["bob.smith"]), 1002),
    ("toUserId of 65 bytes", fields(to=["b" * 65]), 1002),
    ("no objectName", _without("objectName"), 1002),
    ("unknown RC: type", fields(object_name="RC:Nope"), 1002),
    ("custom type of 33", fields(object_name="a" * 33, content="x"), 1002),
    ("no content", _without("content"), 1002),
    ("content over 128 KiB", fields(content={"content": "x" * 131_072}), 1005),
    ("content not JSON", fields(content="hi"), 1002),
    ("text without content", fields(content={"text": "hi"}), 1002),
    ("extra not a string", fields(content={"content": "hi", "extra": {}}), 1002),
    (
        "image without URL",
        fields(object_name="RC:ImgMsg", content={"content": "", "imageUri": ""}),
        1002,
    ),
    (
        "voice of negative duration",
        fields(object_name="RC:HQVCMsg", content={"remoteUrl": "https://x/v", "duration": -1}),
        1002,
    ),
    (
        "location out of range",
        fields(
            object_name="RC:LBSMsg",
            content={"content": "", "latitude": 91, "longitude": 0, "poi": ""},
        ),
        1002,
    ),
    ("isPersisted 2", fields(isPersisted="2"), 1002),
    ("disablePush 1", fields(disablePush="1"), 1002),
    ("count 10000", fields(count="10000"), 1002),
    ("pushExt title of 51", fields(pushExt=json.dumps({"title": "t" * 51})), 1002),
    ("pushExt not JSON", fields(pushExt="title"), 1002),
    ("extraContent without expansion", fields(extraContent='{"a":"b"}'), 1002),
]


@pytest.mark.parametrize(("case", "form", "code"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_refusals_name_the_problem_at_the_documented_status(
    case: str, form: list[tuple[str, str]] | str, code: int, vendors: Vendors
) -> None:
    answer = await post(vendors, form)
    assert (answer.status, answer.body["code"]) == (400, code), answer
    assert vendors.server.state.stats("rongcloud").calls_processed == 0


async def test_form_content_type_is_required(vendors: Vendors) -> None:
    answer = await post(vendors, fields(), content_type="application/json")
    assert (answer.status, answer.body["code"]) == (400, 1002)


async def test_custom_content_may_be_any_text(vendors: Vendors) -> None:
    answer = await post(vendors, fields(object_name="App:Order", content="not json"))
    assert answer.status == 200, answer


async def test_rate_counts_recipients_and_answers_1008_with_429(
    start_sandbox: StartSandbox,
) -> None:
    vendors = await start_sandbox(
        SandboxConfig(vendors={"rongcloud": RongCloudSettings(recipient_limit=3)})
    )
    assert (await post(vendors, fields(to=["a", "b"]))).status == 200
    refused = await post(vendors, fields(to=["c", "d"]))
    assert (refused.status, refused.body["code"]) == (429, 1008)
    assert (await post(vendors, fields(to=["c"]))).status == 200  # no block
    stats = vendors.server.state.stats("rongcloud")
    assert stats.refusals == {"1008": 1}
    assert stats.deliveries == 3
