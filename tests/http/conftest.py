"""A real gateway serving gRPC and HTTP/JSON on loopback port 0, and an HTTP client."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from google.protobuf import message as protobuf_message

from tests.conftest import RunningGateway, StartGateway


@dataclasses.dataclass
class HttpGateway:
    """A gateway and an HTTP session pointed at its [http] listen."""

    grpc: RunningGateway
    session: aiohttp.ClientSession
    base: str

    def url(self, path: str) -> str:
        return self.base + path

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body)."""
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method, self.url(path), data=data, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json(content_type=None)

    async def call_raw(self, method: str, path: str, data: bytes) -> tuple[int, Any]:
        """(status, parsed JSON body) of a request with a raw body."""
        async with self.session.request(method, self.url(path), data=data) as response:
            return response.status, await response.json(content_type=None)

    async def lines(
        self, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> list[Any]:
        """An NDJSON stream, one parsed object per line."""
        method = kwargs.pop("method", "GET")
        async with self.session.request(
            method, self.url(path), headers=headers, **kwargs
        ) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("application/x-ndjson")
            return [json.loads(line) async for line in response.content if line.strip()]


StartHttp = Callable[..., Awaitable[HttpGateway]]


@pytest.fixture
async def start_http(start_gateway: StartGateway) -> AsyncIterator[StartHttp]:
    """Start gateways with [http] listen on a free port (arguments as start_gateway's)."""
    sessions: list[aiohttp.ClientSession] = []

    async def start(**kwargs: Any) -> HttpGateway:
        kwargs.setdefault("http_listen", "127.0.0.1:0")
        connector = kwargs.pop("connector", None)
        scheme = kwargs.pop("scheme", "http")
        running = await start_gateway(**kwargs)
        session = aiohttp.ClientSession(connector=connector)
        sessions.append(session)
        return HttpGateway(running, session, f"{scheme}://127.0.0.1:{running.gateway.http_port}")

    yield start
    for session in sessions:
        await session.close()


@pytest.fixture
async def http(start_http: StartHttp) -> HttpGateway:
    return await start_http()


def from_json(value: Any, message_type: type[protobuf_message.Message]) -> Any:
    """A JSON answer parsed as `message_type` (unknown fields are an error)."""
    return json_format.ParseDict(value, message_type())


def as_dict(message: protobuf_message.Message) -> dict[str, Any]:
    """Field by field, the way the HTTP API writes it."""
    return json_format.MessageToDict(message)
