"""What Yunxin's legacy (v1) and v2 APIs declare alike: one app, its credentials and
accounts (vendors.md §2.1, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from imgate.vendors.base.spec import IdRule, IdUnit

CREDENTIAL_FIELDS: Final[Mapping[str, type]] = {"app_key": str, "app_secret": str}
APP_ID_FIELD: Final = "app_key"
SANDBOX_CREDENTIALS: Final[Mapping[str, Any]] = {
    "app_key": "sandbox-app-key",
    "app_secret": "sandbox-app-secret",  # public sandbox credential (CONTRACT §2)
}
ID_RULE: Final = IdRule(32, IdUnit.UTF16)
"""accid: at most 32 characters, counted by the JVM (UTF-16 units)."""
