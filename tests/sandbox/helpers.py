"""Signing and calling helpers for the sandbox tests (signatures: imgate.vendors.base.auth)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from imgate.sandbox import (
    SANDBOX_TENCENT_ADMIN_IDENTIFIER,
    SANDBOX_TENCENT_SDK_APP_ID,
    SANDBOX_TENCENT_SECRET_KEY,
    SANDBOX_YUNXIN_APP_KEY,
    SANDBOX_YUNXIN_APP_SECRET,
    SandboxServer,
)
from imgate.vendors.base.auth import tencent_user_sig, yunxin_headers

FORM = "application/x-www-form-urlencoded;charset=utf-8"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def yunxin_auth(
    now: float | None = None,
    *,
    app_key: str = SANDBOX_YUNXIN_APP_KEY,
    app_secret: str = SANDBOX_YUNXIN_APP_SECRET,
    nonce: str | None = None,
) -> dict[str, str]:
    """Fresh Yunxin auth headers for the sandbox app."""
    return yunxin_headers(
        app_key,
        app_secret,
        uuid.uuid4().hex if nonce is None else nonce,
        time.time() if now is None else now,
    )


def tencent_query(
    *,
    now: float | None = None,
    identifier: str = SANDBOX_TENCENT_ADMIN_IDENTIFIER,
    key: str = SANDBOX_TENCENT_SECRET_KEY,
    sig_app_id: int = SANDBOX_TENCENT_SDK_APP_ID,
    sig_identifier: str | None = None,
    expire: int = 86400,
    **overrides: str | None,
) -> dict[str, str]:
    """A signed Tencent query string; overrides replace (or, with None, drop) parameters."""
    stamp = int(time.time() if now is None else now)
    query: dict[str, str] = {
        "sdkappid": str(SANDBOX_TENCENT_SDK_APP_ID),
        "identifier": identifier,
        "usersig": tencent_user_sig(key, sig_app_id, sig_identifier or identifier, stamp, expire),
        "random": "12345678",
        "contenttype": "json",
    }
    for name, value in overrides.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return query


def yx1_fields(
    to: list[str] | None = None, text: str = "hello", sender: str = "alice", **extra: str
) -> dict[str, str]:
    """A valid legacy sendBatchMsg form (text message), extra fields added or replaced."""
    fields = {
        "fromAccid": sender,
        "toAccids": json.dumps(["bob", "carol"] if to is None else to),
        "type": "0",
        "body": json.dumps({"msg": text}),
    }
    fields.update(extra)
    return fields


def yx2_doc(
    to: list[str] | None = None, text: str = "hello", sender: str = "alice", **extra: Any
) -> dict[str, Any]:
    """A valid v2 batch body (text message), extra top-level keys added or replaced."""
    doc: dict[str, Any] = {
        "sender_id": sender,
        "receiver_ids": ["bob", "carol"] if to is None else to,
        "message": {"message_type": 0, "text": text},
    }
    doc.update(extra)
    return doc


def tx_doc(to: list[str] | None = None, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A valid batchsendmsg body (text message), extra keys added or replaced."""
    doc: dict[str, Any] = {
        "To_Account": ["bob", "carol"] if to is None else to,
        "MsgSeq": 7,
        "MsgRandom": 19901224,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
    }
    doc.update(extra)
    return doc


@dataclass
class Answer:
    """A vendor answer: HTTP status, content type, raw text and (when JSON) the body."""

    status: int
    content_type: str
    text: str
    body: Any = field(default=None)


@dataclass
class Vendors:
    """Calls the sandbox's vendor endpoints the way a client of each vendor would."""

    server: SandboxServer
    session: aiohttp.ClientSession

    async def _post(
        self,
        vendor: str,
        data: bytes | str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        time_limit_s: float | None = None,
    ) -> Answer:
        async with self.session.post(
            self.server.vendor_url(vendor),
            data=data,
            headers=dict(headers),
            params=params,
            timeout=aiohttp.ClientTimeout(total=time_limit_s),
        ) as response:
            text = await response.text()
            answer = Answer(response.status, response.content_type, text)
            if response.content_type == "application/json":
                try:
                    answer.body = json.loads(text)
                except ValueError:
                    answer.body = None
            return answer

    async def yx1_raw(
        self,
        data: bytes | str,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = FORM,
        time_limit_s: float | None = None,
    ) -> Answer:
        # Given headers replace the auth headers whole (so a test can leave one out).
        auth = yunxin_auth() if headers is None else headers
        all_headers = {**auth, "Content-Type": content_type}
        return await self._post("yunxin_v1", data, all_headers, time_limit_s=time_limit_s)

    async def yx1(self, fields: Mapping[str, str], **kwargs: Any) -> dict[str, Any]:
        answer = await self.yx1_raw(urlencode(fields), **kwargs)
        assert answer.status == 200, answer
        return dict(answer.body)

    async def yx2_raw(
        self,
        doc: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/json",
        time_limit_s: float | None = None,
    ) -> Answer:
        data = doc if isinstance(doc, bytes | str) else json.dumps(doc)
        # Given headers replace the auth headers whole (so a test can leave one out).
        auth = yunxin_auth() if headers is None else headers
        all_headers = {**auth, "Content-Type": content_type}
        return await self._post("yunxin_v2", data, all_headers, time_limit_s=time_limit_s)

    async def yx2(self, doc: Any, **kwargs: Any) -> dict[str, Any]:
        answer = await self.yx2_raw(doc, **kwargs)
        assert answer.status == 200, answer
        return dict(answer.body)

    async def tx_raw(
        self, doc: Any, query: Mapping[str, str] | None = None, *, time_limit_s: float | None = None
    ) -> Answer:
        data = doc if isinstance(doc, bytes | str) else json.dumps(doc)
        params = tencent_query() if query is None else query
        return await self._post(
            "tencent", data, {"Content-Type": "application/json"}, params, time_limit_s
        )

    async def tx(self, doc: Any, query: Mapping[str, str] | None = None) -> dict[str, Any]:
        answer = await self.tx_raw(doc, query)
        assert answer.status == 200, answer
        return dict(answer.body)
