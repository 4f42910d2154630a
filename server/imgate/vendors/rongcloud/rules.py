"""RongCloud's rules beyond the spec, declared once and read by both the translator and the
emulator: the signature, field formats and caps, the built-in message types and their
business codes (docs/vendor-mapping.md "RongCloud", tags RC-*).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

USER_ID: Final = re.compile(r"[A-Za-z0-9+=_-]+")
"""A user id's characters: letters, digits and + = - _ (RC-USER); the length is the spec's
id rule (64 bytes)."""
USER_ID_RULE_TEXT: Final = "RongCloud user ids are letters, digits and + = - _ only"

MAX_CONTENT_BYTES: Final = 128 * 1024
"""`content`: "at most 128k a message" (RC-SEND), read as KiB of the UTF-8 form value
(the unit is unverified)."""
OBJECT_NAME_MAX_CHARS: Final = 32
"""A custom objectName: at most 32 characters, not starting with "RC:" (RC-SEND)."""
BUILT_IN_PREFIX: Final = "RC:"
NONCE_MAX_CHARS: Final = 18
"""The Nonce header: "no more than 18 characters" (RC-AUTH, docs.rongcloud.io)."""
PUSH_TITLE_MAX_CHARS: Final = 50
"""pushExt.title: at most 50 characters (RC-JAVA PushExt.build)."""
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

# Answer codes (RC-CODES; the HTTP status of each is the spec's refusal_statuses).
SUCCESS: Final = 200
NOT_FOUND: Final = 404
INTERNAL_ERROR: Final = 1000
APP_SECRET_WRONG: Final = 1001
PARAMETER_ERROR: Final = 1002
NO_POST_DATA: Final = 1003
SIGNATURE_FAILED: Final = 1004
PARAMETER_TOO_LONG: Final = 1005
APP_LOCKED: Final = 1006
METHOD_RESTRICTED: Final = 1007
RATE_LIMITED: Final = 1008
SERVICE_NOT_ENABLED: Final = 1009
INTERNAL_TIMEOUT: Final = 1050

STRING, NUMBER, INTEGER = "string", "number", "integer"
BUILT_IN_CONTENT: Final[Mapping[str, Mapping[str, str]]] = {
    "RC:TxtMsg": {"content": STRING},
    "RC:InfoNtf": {"message": STRING},
    "RC:ImgMsg": {"content": STRING, "imageUri": STRING},
    "RC:HQVCMsg": {"remoteUrl": STRING, "duration": INTEGER},
    "RC:SightMsg": {
        "content": STRING,
        "sightUrl": STRING,
        "duration": INTEGER,
        "size": INTEGER,
        "name": STRING,
    },
    "RC:LBSMsg": {"content": STRING, "latitude": NUMBER, "longitude": NUMBER, "poi": STRING},
    "RC:FileMsg": {"name": STRING, "size": INTEGER, "type": STRING, "fileUrl": STRING},
}
"""The built-in types imgate sends, with the members it always sends and their JSON types
(RC-OBJ; RC-JAVA io.rong.messages, RC-GO message structs): what the translator builds and
the emulator requires. Every one may also carry `extra` (a string) and `user`."""
URL_MEMBERS: Final = frozenset({"imageUri", "remoteUrl", "sightUrl", "fileUrl"})
"""Members holding the media's download URL: never empty."""
OTHER_BUILT_IN: Final = frozenset(
    {
        "RC:VcMsg",
        "RC:GIFMsg",
        "RC:ImgTextMsg",
        "RC:ReferenceMsg",
        "RC:CombineMsg",
        "RC:CmdMsg",
        "RC:CmdNtf",
        "RC:ContactNtf",
        "RC:ProfileNtf",
        "RC:GrpNtf",
    }
)
"""Other built-in types the vendor documents (RC-OBJ); imgate sends none of them."""


def signature(app_secret: str, nonce: str, timestamp: str) -> str:
    """The Signature header: lowercase hex SHA-1 of app secret + nonce + timestamp (RC-AUTH)."""
    # SHA-1 is the vendor's choice, not ours.
    return hashlib.sha1((app_secret + nonce + timestamp).encode()).hexdigest()  # noqa: S324


def object_name_problem(name: str) -> str | None:
    """Why `name` cannot be an objectName, or None (RC-SEND)."""
    if not name:
        return "is required"
    if name.startswith(BUILT_IN_PREFIX):
        if name in BUILT_IN_CONTENT or name in OTHER_BUILT_IN:
            return None
        return 'starts with "RC:" but is not a built-in type'
    if len(name) > OBJECT_NAME_MAX_CHARS:
        return f"is longer than {OBJECT_NAME_MAX_CHARS} characters"
    return None
