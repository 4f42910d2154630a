"""Shared builders for the translator tests: requests, one of each content kind, a
fixed attempt."""

from __future__ import annotations

from typing import Any

from imgate.v1 import gateway_pb2 as pb

NOW = 1_700_000_000.0
NONCE = "0123456789abcdef0123456789abcdef"
CHUNK_KEY = "4f1c9a0e5b7d4c2a8e6f1a3b5c7d9e0f:0"
RECIPIENTS = ("bonnie", "rong")

IMAGE = pb.ImageContent(
    url="https://cdn.example/a.png",
    md5="9e107d9d372bb6826bd81d3542a419d6",
    name="a.png",
    format="png",
    size_bytes=2048,
    width=640,
    height=480,
)
AUDIO = pb.AudioContent(
    url="https://cdn.example/v.aac",
    md5="e4d909c290d0fb1ca068ffaddf22cbd0",
    format="aac",
    size_bytes=4096,
    duration_ms=3200,
)
THUMBNAIL = pb.ImageVariant(
    url="https://cdn.example/m.jpg",
    md5="b026324c6904b2a9cb4b88d6d61c81d1",
    format="jpg",
    size_bytes=20_480,
    width=320,
    height=180,
)
VIDEO = pb.VideoContent(
    url="https://cdn.example/m.mp4",
    md5="d41d8cd98f00b204e9800998ecf8427e",
    format="mp4",
    size_bytes=10_485_760,
    width=1280,
    height=720,
    duration_ms=61_000,
    thumbnail=THUMBNAIL,
)
LOCATION = pb.LocationContent(title="西湖", latitude=30.2431, longitude=120.1502)
FILE = pb.FileContent(
    url="https://cdn.example/r.pdf",
    md5="0cc175b9c0f1b6a831c399e269772661",
    name="report.pdf",
    format="pdf",
    size_bytes=123_456,
)
CUSTOM = pb.CustomContent(data='{"kind": "order", "id": 42}', description="新订单")
CUSTOM_WITH_SUB_TYPE = pb.CustomContent(
    data='{"kind": "order", "id": 42}', sub_type=7, description="新订单"
)

CONTENTS: dict[str, pb.Message] = {
    "text": pb.Message(text=pb.TextContent(text="hi, 你好")),
    "tip": pb.Message(tip=pb.TipContent(text="张三 joined")),
    "image": pb.Message(image=IMAGE),
    "audio": pb.Message(audio=AUDIO),
    "video": pb.Message(video=VIDEO),
    "location": pb.Message(location=LOCATION),
    "file": pb.Message(file=FILE),
    "custom": pb.Message(custom=CUSTOM),
}
"""One message of each content kind, keyed by the oneof field name."""


def make_request(
    content: pb.Message | None = None,
    *,
    sender_id: str = "dave",
    recipients: tuple[str, ...] | list[str] = RECIPIENTS,
    extension: str = "",
    **options: Any,
) -> pb.BatchSendRequest:
    """A request (text content unless `content` is given); `options` are SendOptions."""
    message = pb.Message()
    message.CopyFrom(content if content is not None else CONTENTS["text"])
    if extension:
        message.extension = extension
    return pb.BatchSendRequest(
        sender_id=sender_id,
        recipient_ids=list(recipients),
        message=message,
        options=pb.SendOptions(**options),
    )
