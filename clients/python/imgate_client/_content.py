"""Helpers that build a ``gateway_pb2.Message`` for each kind of content.

``extension`` (and ``custom``'s ``data``) take JSON either as text or as a mapping, which
is serialized compactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeAlias

from imgate.v1 import gateway_pb2

JsonObject: TypeAlias = str | Mapping[str, Any]
"""A JSON object given as text, or as a mapping to serialize."""


def text(text: str, /, *, extension: JsonObject | None = None) -> gateway_pb2.Message:
    """A plain-text message."""
    return gateway_pb2.Message(
        text=gateway_pb2.TextContent(text=text), extension=_json_text(extension)
    )


def tip(text: str, /, *, extension: JsonObject | None = None) -> gateway_pb2.Message:
    """A tip: a system-style notice shown inline in the conversation."""
    return gateway_pb2.Message(
        tip=gateway_pb2.TipContent(text=text), extension=_json_text(extension)
    )


def custom(
    data: JsonObject,
    /,
    *,
    sub_type: int = 0,
    description: str = "",
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """Application-defined content. ``description`` differs by vendor: Yunxin keeps it as a
    history-search description, Tencent pushes it as the offline-push text."""
    return gateway_pb2.Message(
        custom=gateway_pb2.CustomContent(
            data=_json_text(data), sub_type=sub_type, description=description
        ),
        extension=_json_text(extension),
    )


def image(
    url: str,
    /,
    *,
    md5: str = "",
    name: str = "",
    format: str = "",
    size_bytes: int = 0,
    width: int = 0,
    height: int = 0,
    large: gateway_pb2.ImageVariant | None = None,
    thumbnail: gateway_pb2.ImageVariant | None = None,
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """An image stored at ``url``, with optional ``large`` and ``thumbnail`` renditions
    (Tencent requires ``width`` and ``height``)."""
    return gateway_pb2.Message(
        image=gateway_pb2.ImageContent(
            url=url,
            md5=md5,
            name=name,
            format=format,
            size_bytes=size_bytes,
            width=width,
            height=height,
            large=large,
            thumbnail=thumbnail,
        ),
        extension=_json_text(extension),
    )


def audio(
    url: str,
    /,
    *,
    md5: str = "",
    format: str = "",
    size_bytes: int = 0,
    duration_ms: int = 0,
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """A voice clip stored at ``url``."""
    return gateway_pb2.Message(
        audio=gateway_pb2.AudioContent(
            url=url, md5=md5, format=format, size_bytes=size_bytes, duration_ms=duration_ms
        ),
        extension=_json_text(extension),
    )


def video(
    url: str,
    /,
    *,
    md5: str = "",
    format: str = "",
    size_bytes: int = 0,
    width: int = 0,
    height: int = 0,
    duration_ms: int = 0,
    thumbnail: gateway_pb2.ImageVariant | None = None,
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """A video stored at ``url``; ``thumbnail`` (url, width, height) is required on
    Tencent."""
    return gateway_pb2.Message(
        video=gateway_pb2.VideoContent(
            url=url,
            md5=md5,
            format=format,
            size_bytes=size_bytes,
            width=width,
            height=height,
            duration_ms=duration_ms,
            thumbnail=thumbnail,
        ),
        extension=_json_text(extension),
    )


def location(
    title: str,
    /,
    latitude: float,
    longitude: float,
    *,
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """A geographic location (degrees)."""
    return gateway_pb2.Message(
        location=gateway_pb2.LocationContent(title=title, latitude=latitude, longitude=longitude),
        extension=_json_text(extension),
    )


def file(
    url: str,
    /,
    *,
    md5: str = "",
    name: str = "",
    format: str = "",
    size_bytes: int = 0,
    extension: JsonObject | None = None,
) -> gateway_pb2.Message:
    """A file stored at ``url``."""
    return gateway_pb2.Message(
        file=gateway_pb2.FileContent(
            url=url, md5=md5, name=name, format=format, size_bytes=size_bytes
        ),
        extension=_json_text(extension),
    )


def _json_text(value: JsonObject | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        # Passed through untouched: the server validates it and names the field if wrong.
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
