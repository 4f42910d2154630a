"""RongCloud's message content: the objectName and content JSON of each imgate content
kind (docs/vendor-mapping.md "RongCloud content"; RC-OBJ, RC-JAVA, RC-GO)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.common import ceil_seconds, json_object

CUSTOM_OBJECT_NAME: Final = "imgate:Custom"
"""The objectName of custom content: CustomContent has no type name, so imgate's custom
messages share one app-defined type (not "RC:", at most 32 characters, RC-SEND), which the
app's clients register to read `data`."""

OBJECT_NAMES: Final[Mapping[str, str]] = {
    "text": "RC:TxtMsg",
    "tip": "RC:InfoNtf",  # the gray-bar notice: stored, not counted, no push (RC-OBJ)
    "image": "RC:ImgMsg",
    "audio": "RC:HQVCMsg",
    "video": "RC:SightMsg",
    "location": "RC:LBSMsg",
    "file": "RC:FileMsg",
    "custom": CUSTOM_OBJECT_NAME,
}
"""objectName by content kind."""

NO_THUMBNAIL: Final = ""
"""RC:ImgMsg / RC:SightMsg / RC:LBSMsg `content` is a base64 JPG thumbnail (RC-OBJ). imgate
has media URLs, not picture data, so it is sent empty, as the official SDKs' models
default it (RC-JAVA); IMKit's chat UI then shows no preview (RC-IMG-HELP)."""


def content_of(message: pb.Message) -> dict[str, Any]:
    """The content JSON object of `message` (validated: custom data is a JSON object)."""
    kind = message.WhichOneof("content")
    content: dict[str, Any]
    if kind == "text":
        content = {"content": message.text.text}
    elif kind == "tip":
        content = {"message": message.tip.text}
    elif kind == "image":
        content = {"content": NO_THUMBNAIL, "imageUri": message.image.url}
    elif kind == "audio":
        audio = message.audio
        content = {"remoteUrl": audio.url, "duration": ceil_seconds(audio.duration_ms)}
    elif kind == "video":
        video = message.video
        content = {
            "content": NO_THUMBNAIL,
            "sightUrl": video.url,
            "duration": ceil_seconds(video.duration_ms),
            "size": video.size_bytes,
            "name": "",  # VideoContent has no file name
        }
    elif kind == "location":
        location = message.location
        content = {
            "content": NO_THUMBNAIL,
            "latitude": location.latitude,
            "longitude": location.longitude,
            "poi": location.title,
        }
    elif kind == "file":
        file = message.file
        content = {
            "name": file.name,
            "size": file.size_bytes,
            "type": file.format,
            "fileUrl": file.url,
        }
    elif kind == "custom":
        content = json_object(message.custom.data) or {}
    else:
        raise ValueError("message has no content")
    if message.extension:
        # Every built-in type's member for app data (RC-OBJ), a string.
        content["extra"] = message.extension
    return content
