"""Authentication: the fixed vectors of vendors.md §2, Yunxin CheckSum and Tencent UserSig."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any
from urllib.parse import urlencode

import pytest

from imgate.sandbox import (
    SANDBOX_TENCENT_SDK_APP_ID,
    SANDBOX_YUNXIN_APP_KEY,
    Clock,
    SandboxConfig,
)
from imgate.vendors.base.auth import tencent_hmac, tencent_user_sig, yunxin_checksum

from .conftest import StartSandbox
from .helpers import Vendors, tencent_query, tx_doc, yunxin_auth, yx1_fields, yx2_doc

NOW = 1_700_000_000.0


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    def __repr__(self) -> str:
        return "<non-empty text>"


def _any_text() -> Any:
    return _AnyText()


def _without(query: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in query.items() if k != name}


def _urlencoded(fields: dict[str, str]) -> str:
    return urlencode(fields)


def test_yunxin_checksum_vector() -> None:
    assert yunxin_checksum("mysecret", "abc123", "1700000000") == (
        "80d96c85d77d61d76223b15d92fed2be4ffbc049"
    )


def test_tencent_sig_vector_and_round_trip() -> None:
    key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
    assert tencent_hmac(key, "xiaojun", 1400000000, 1700000000, 15552000) == (
        "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
    )
    user_sig = tencent_user_sig(key, 1400000000, "xiaojun", 1700000000, 15552000)
    raw = base64.b64decode(user_sig.translate(str.maketrans("*-_", "+/=")))
    doc = json.loads(zlib.decompress(raw))
    assert doc["TLS.sig"] == "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
    assert doc["TLS.ver"] == "2.0"


@pytest.fixture
async def fixed_time(start_sandbox: StartSandbox) -> Vendors:
    """A sandbox whose wall clock stands at NOW."""
    return await start_sandbox(SandboxConfig(clock=Clock(wall=lambda: NOW)))


@pytest.mark.parametrize("skew", [-300, -299, 0, 299, 300])
async def test_yunxin_accepts_cur_time_within_five_minutes(fixed_time: Vendors, skew: int) -> None:
    headers = yunxin_auth(NOW + skew)
    assert (await fixed_time.yx1(yx1_fields(), headers=headers))["code"] == 200
    assert (await fixed_time.yx2(yx2_doc(), headers=yunxin_auth(NOW + skew)))["code"] == 200


def _bad_yunxin_headers() -> list[tuple[str, dict[str, str]]]:
    good = yunxin_auth(NOW, nonce="n1")
    return [
        ("no AppKey", {k: v for k, v in good.items() if k != "AppKey"}),
        ("unknown AppKey", yunxin_auth(NOW, app_key="other-app", nonce="n1")),
        ("wrong secret", yunxin_auth(NOW, app_secret="not-the-secret", nonce="n1")),
        ("uppercase CheckSum", {**good, "CheckSum": good["CheckSum"].upper()}),
        ("CheckSum of another nonce", {**good, "Nonce": "n2"}),
        ("no CheckSum", {k: v for k, v in good.items() if k != "CheckSum"}),
        ("empty Nonce", yunxin_auth(NOW, nonce="")),
        ("129-char Nonce", yunxin_auth(NOW, nonce="n" * 129)),
        ("stale CurTime", yunxin_auth(NOW - 301)),
        ("future CurTime", yunxin_auth(NOW + 301)),
        ("CurTime in ms", {**good, "CurTime": "1700000000000"}),
        ("CurTime not an integer", {**good, "CurTime": "1700000000.0"}),
    ]


@pytest.mark.parametrize(("case", "headers"), _bad_yunxin_headers())
async def test_yunxin_refuses_bad_auth_with_403(
    fixed_time: Vendors, case: str, headers: dict[str, str]
) -> None:
    v1 = await fixed_time.yx1_raw(_urlencoded(yx1_fields()), headers=headers)
    assert v1.status == 200
    assert v1.body["code"] == 403, case
    assert set(v1.body) == {"code", "desc"}
    v2 = await fixed_time.yx2_raw(yx2_doc(), headers=headers)
    assert v2.body["code"] == 403, case
    assert v2.body["data"] == {}
    assert isinstance(v2.body["msg"], str)
    assert fixed_time.server.state.deliveries() == []


async def test_yunxin_nonce_of_128_chars_is_accepted(fixed_time: Vendors) -> None:
    answer = await fixed_time.yx1(yx1_fields(), headers=yunxin_auth(NOW, nonce="n" * 128))
    assert answer["code"] == 200


def _bad_tencent_queries() -> list[tuple[str, dict[str, str], int]]:
    return [
        ("no sdkappid", tencent_query(now=NOW, sdkappid=None), 60012),
        ("other sdkappid", tencent_query(now=NOW, sdkappid="1400000001"), 60006),
        ("sdkappid not a number", tencent_query(now=NOW, sdkappid="abc"), 60006),
        ("no contenttype", tencent_query(now=NOW, contenttype=None), 60002),
        ("contenttype xml", tencent_query(now=NOW, contenttype="xml"), 60002),
        ("no random", tencent_query(now=NOW, random=None), 60002),
        ("random negative", tencent_query(now=NOW, random="-1"), 60002),
        ("random too big", tencent_query(now=NOW, random="4294967296"), 60002),
        ("random not a number", tencent_query(now=NOW, random="abc"), 60002),
        ("no identifier", _without(tencent_query(now=NOW), "identifier"), 60004),
        ("identifier not admin", tencent_query(now=NOW, identifier="bob"), 60010),
        ("no usersig", tencent_query(now=NOW, usersig=None), 70002),
        ("usersig garbage", tencent_query(now=NOW, usersig="not-a-sig"), 70003),
        ("usersig expired", tencent_query(now=NOW - 100, expire=50), 70001),
        ("usersig other key", tencent_query(now=NOW, key="another-key"), 70009),
        ("usersig other identifier", tencent_query(now=NOW, sig_identifier="bob"), 70013),
        ("usersig other app", tencent_query(now=NOW, sig_app_id=1400000001), 70014),
    ]


@pytest.mark.parametrize(("case", "query", "code"), _bad_tencent_queries())
async def test_tencent_refuses_bad_url_auth(
    fixed_time: Vendors, case: str, query: dict[str, str], code: int
) -> None:
    answer = await fixed_time.tx_raw(tx_doc(), query)
    assert answer.status == 200
    assert answer.body == {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": _any_text()}, (
        case
    )
    assert fixed_time.server.state.deliveries() == []


@pytest.mark.parametrize("random", ["0", "4294967295"])
async def test_tencent_accepts_random_bounds_and_signed_admin(
    fixed_time: Vendors, random: str
) -> None:
    answer = await fixed_time.tx(tx_doc(), tencent_query(now=NOW, random=random))
    assert answer["ActionStatus"] == "OK"
    assert str(SANDBOX_TENCENT_SDK_APP_ID) in tencent_query(now=NOW)["sdkappid"]


async def test_tencent_usersig_valid_until_time_plus_expire(start_sandbox: StartSandbox) -> None:
    vendors = await start_sandbox(SandboxConfig(clock=Clock(wall=lambda: NOW)))
    query = tencent_query(now=NOW - 100, expire=100)  # expires exactly now: still valid
    assert (await vendors.tx(tx_doc(), query))["ActionStatus"] == "OK"


async def test_logs_carry_paths_not_signatures(
    vendors: Vendors, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    query = tencent_query()
    await vendors.tx(tx_doc(), query)
    await vendors.yx1(yx1_fields())
    assert "/v4/openim/batchsendmsg" in caplog.text
    assert query["usersig"] not in caplog.text
    assert SANDBOX_YUNXIN_APP_KEY not in caplog.text
