"""Tencent's request body: the one MsgBody element of a message, and what Tencent
requires or cannot express (vendors.md §4.3, §10.3; docs/vendor-mapping.md "Tencent
elements")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.common import ceil_seconds, compact_json, media_uuid, unsupported_option
from imgate.vendors.base.translator import FieldViolation
from imgate.vendors.tencent.spec import SPEC

PUSH_OBJECTS: Final[Mapping[str, str]] = {
    option: member.removeprefix("OfflinePushInfo.") for option, member in SPEC.own_options.items()
}
"""SendOptions JSON-object fields passed as OfflinePushInfo members."""

_IMAGE_FORMATS: Final[Mapping[str, int]] = {"jpg": 1, "jpeg": 1, "gif": 2, "png": 3, "bmp": 4}
_OTHER_IMAGE_FORMAT: Final = 255
_DOWNLOAD_FLAG: Final = 2  # the only value the API takes: download from Url
ORIGINAL_IMAGE, LARGE_IMAGE, THUMBNAIL_IMAGE = 1, 2, 3
"""ImageInfoArray Type values (vendors.md §10.3)."""

ELEMENT_REQUIRED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "TIMTextElem": ("Text",),
    "TIMLocationElem": ("Desc", "Latitude", "Longitude"),
    "TIMFaceElem": ("Index", "Data"),
    "TIMCustomElem": ("Data",),
    "TIMSoundElem": ("Url", "UUID", "Size", "Second", "Download_Flag"),
    "TIMImageElem": ("UUID", "ImageFormat", "ImageInfoArray"),
    "TIMFileElem": ("Url", "UUID", "FileSize", "FileName", "Download_Flag"),
    "TIMVideoFileElem": (
        "VideoUrl",
        "VideoUUID",
        "VideoSize",
        "VideoSecond",
        "VideoFormat",
        "VideoDownloadFlag",
        "ThumbUrl",
        "ThumbUUID",
        "ThumbSize",
        "ThumbWidth",
        "ThumbHeight",
        "ThumbFormat",
        "ThumbDownloadFlag",
    ),
}
"""MsgContent fields each element must carry in a REST send (TX-FMT, vendors.md §10.3):
what the translator sends and the emulator requires."""
IMAGE_INFO_REQUIRED_FIELDS: Final = ("Type", "Size", "Width", "Height", "URL")
"""Fields of every ImageInfoArray entry (TX-FMT)."""


def tencent_violations(request: pb.BatchSendRequest) -> list[FieldViolation]:
    """What Tencent requires or cannot express beyond the spec's capabilities (vendors.md
    §4.3, §10.3; issue 13.1, 13.3)."""
    message, options = request.message, request.options
    problems: list[FieldViolation] = []
    kind = message.WhichOneof("content")
    if kind == "image":
        for name in ("width", "height"):
            if getattr(message.image, name) <= 0:
                problems.append(
                    FieldViolation(f"message.image.{name}", "required (> 0) on Tencent")
                )
    elif kind == "video":
        if not message.video.HasField("thumbnail"):
            problems.append(
                FieldViolation(
                    "message.video.thumbnail",
                    "required on Tencent (ThumbUrl, ThumbWidth, ThumbHeight are required)",
                )
            )
        else:
            for name in ("width", "height"):
                if getattr(message.video.thumbnail, name) <= 0:
                    problems.append(
                        FieldViolation(
                            f"message.video.thumbnail.{name}", "required (> 0) on Tencent"
                        )
                    )
    if options.HasField("push_nick_enabled"):
        problems.append(
            unsupported_option(
                "tencent", "push_nick_enabled", "Tencent has no sender-nickname switch"
            )
        )
    if (
        options.HasField("offline_enabled")
        and not options.offline_enabled
        and not options.online_only
    ):
        # OnlineOnlyFlag, Tencent's only switch for offline storage, also drops history,
        # roaming, the unread count and (per the SDK docs) the offline push: an offline
        # recipient never gets the message although the call answers OK (TX-1612,
        # TX-ONLINE). Refused rather than silently made online-only (issue 22).
        problems.append(
            unsupported_option(
                "tencent",
                "offline_enabled",
                "offline storage cannot be turned off alone (its only switch, OnlineOnlyFlag,"
                " also drops history, roaming and the unread count); set online_only",
            )
        )
    if options.HasField("history_enabled") and not options.history_enabled:
        problems.append(
            unsupported_option(
                "tencent",
                "history_enabled",
                "history cannot be turned off alone; online_only turns off history,"
                " offline storage and unread together",
            )
        )
    return problems


def element(message: pb.Message) -> dict[str, Any]:
    """The one MsgBody element for the message (vendors.md §10.3, vendor-mapping.md)."""
    kind = message.WhichOneof("content")
    if kind == "text":
        return {"MsgType": "TIMTextElem", "MsgContent": {"Text": message.text.text}}
    if kind == "tip":
        # Tencent has no tip type: an app-defined element clients recognise by its type.
        # No Desc: a custom element's Desc is its offline-push text, and a custom-only
        # message with neither Desc nor OfflinePushInfo.Desc raises no offline push
        # (TX-FMT), as a UI tip should not; push_content still sets one (issue 22).
        data = compact_json({"type": "tip", "text": message.tip.text})
        return {"MsgType": "TIMCustomElem", "MsgContent": {"Data": data}}
    if kind == "custom":
        # description → Desc: on Tencent the offline-push text of this message (unless
        # push_content is set), where Yunxin keeps it as a history-search description
        # (docs/vendor-mapping.md "Content semantics").
        custom: dict[str, Any] = {"Data": message.custom.data}
        if message.custom.description:
            custom["Desc"] = message.custom.description
        return {"MsgType": "TIMCustomElem", "MsgContent": custom}
    if kind == "location":
        location = message.location
        content: dict[str, Any] = {
            "Desc": location.title,
            "Latitude": location.latitude,
            "Longitude": location.longitude,
        }
        return {"MsgType": "TIMLocationElem", "MsgContent": content}
    if kind == "image":
        image = message.image
        infos = [_image_info(ORIGINAL_IMAGE, image)]
        if image.HasField("large"):
            infos.append(_image_info(LARGE_IMAGE, image.large))
        if image.HasField("thumbnail"):
            infos.append(_image_info(THUMBNAIL_IMAGE, image.thumbnail))
        content = {
            "UUID": media_uuid(image.md5, image.url),
            "ImageFormat": _image_format(image.format),
            "ImageInfoArray": infos,
        }
        return {"MsgType": "TIMImageElem", "MsgContent": content}
    if kind == "audio":
        audio = message.audio
        content = {
            "Url": audio.url,
            "UUID": media_uuid(audio.md5, audio.url),
            "Size": audio.size_bytes,
            "Second": ceil_seconds(audio.duration_ms),
            "Download_Flag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMSoundElem", "MsgContent": content}
    if kind == "video":
        video = message.video
        thumb = video.thumbnail
        content = {
            "VideoUrl": video.url,
            "VideoUUID": media_uuid(video.md5, video.url),
            "VideoSize": video.size_bytes,
            "VideoSecond": ceil_seconds(video.duration_ms),
            "VideoFormat": video.format,
            "VideoDownloadFlag": _DOWNLOAD_FLAG,
            # Required for REST sends (TX-FMT); validate() refuses a video without one.
            "ThumbUrl": thumb.url,
            "ThumbUUID": media_uuid(thumb.md5, thumb.url),
            "ThumbSize": thumb.size_bytes,
            "ThumbWidth": thumb.width,
            "ThumbHeight": thumb.height,
            "ThumbFormat": thumb.format,
            "ThumbDownloadFlag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMVideoFileElem", "MsgContent": content}
    if kind == "file":
        file = message.file
        content = {
            "Url": file.url,
            "UUID": media_uuid(file.md5, file.url),
            "FileSize": file.size_bytes,
            "FileName": file.name,
            "Download_Flag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMFileElem", "MsgContent": content}
    raise ValueError("message has no content")


def _image_format(name: str) -> int:
    return _IMAGE_FORMATS.get(name.lower().lstrip("."), _OTHER_IMAGE_FORMAT)


def _image_info(info_type: int, image: pb.ImageContent | pb.ImageVariant) -> dict[str, Any]:
    """One ImageInfoArray entry; Width and Height are required (TX-FMT)."""
    return {
        "Type": info_type,
        "Size": image.size_bytes,
        "Width": image.width,
        "Height": image.height,
        "URL": image.url,
    }
