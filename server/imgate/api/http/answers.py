"""What the HTTP layer answers: JSON messages, streams as NDJSON or Server-Sent Events,
and errors as google.rpc.Status with the gRPC code's HTTP status."""

from __future__ import annotations

import contextlib

import grpc
from aiohttp import web
from google.protobuf import message as protobuf_message

from imgate.api.errors import ApiError
from imgate.api.http.transcode import HTTP_STATUS, error_json, message_json

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
CURSOR = "cursor"
"""A stream message's field to resume after it (SSE event ids), and a request's to say
where to resume."""
API_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class Answer:
    """One call's response: an error before a stream started is an HTTP status; after,
    it is the stream's last line or event."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._stream: web.StreamResponse | None = None
        self._sse = False

    async def start_stream(self, sse: bool) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": f"{SSE if sse else NDJSON}; charset=utf-8",
                "X-Accel-Buffering": "no",
                **API_HEADERS,
            }
        )
        await response.prepare(self._request)
        self._stream, self._sse = response, sse
        return response

    async def fail(self, error: ApiError) -> web.StreamResponse:
        """The response that ends the call with `error`."""
        if self._stream is None:
            return error_response(error)
        status = error_json(error)
        last = (
            b"event: error\ndata: " + status + b"\n\n"
            if self._sse
            else (b'{"error":' + status + b"}\n")
        )
        with contextlib.suppress(ConnectionResetError):
            await self._stream.write(last)
            await self._stream.write_eof()
        return self._stream


def frame(message: protobuf_message.Message, sse: bool) -> bytes:
    """One stream message: a line of JSON, or an event whose id is its cursor."""
    data = message_json(message)
    if not sse:
        return data + b"\n"
    cursor = getattr(message, CURSOR, "") if has_field(message, CURSOR) else ""
    event_id = f"id: {cursor}\n".encode() if cursor else b""
    return event_id + b"data: " + data + b"\n\n"


def has_field(message: protobuf_message.Message, name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


def resume_after(request: protobuf_message.Message, last_event_id: str) -> None:
    """A stream request with a `cursor` field and none given resumes after the last event
    its client saw (SSE `Last-Event-ID`: the event ids are the cursors)."""
    field = request.DESCRIPTOR.fields_by_name.get(CURSOR)
    if field is not None and not getattr(request, field.name):
        setattr(request, field.name, last_event_id)


def json_response(message: protobuf_message.Message) -> web.Response:
    return web.Response(
        body=message_json(message), content_type="application/json", headers=API_HEADERS
    )


def error_response(error: ApiError) -> web.Response:
    headers = dict(API_HEADERS)
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = 'Bearer realm="imgate"'
    return web.Response(
        status=HTTP_STATUS.get(error.code, 500),
        body=error_json(error),
        content_type="application/json",
        headers=headers,
    )
