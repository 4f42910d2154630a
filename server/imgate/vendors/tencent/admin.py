"""The REST API's admin authentication, shared by the send and the recall translators:
every call carries the app admin's UserSig in its query (TX-USERSIG), signed here and
cached until shortly before it expires."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from imgate.vendors.base.auth import tencent_user_sig
from imgate.vendors.base.common import derived_uint32

USER_SIG_TTL_S: Final = 86400
"""Validity of the admin UserSig we sign: a day, as the community SDKs do."""
USER_SIG_REFRESH_BEFORE_S: Final = 3600
"""Re-sign this long before expiry, so a sig never expires in flight or by clock skew."""


class AdminAuth:
    """The app admin's identity and its cached UserSig, from a backend's credentials."""

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        self.sdk_app_id = int(credentials["sdk_app_id"])
        self._secret_key = str(credentials["secret_key"])
        self.admin = str(credentials["admin_identifier"])
        # The admin UserSig and the time (Unix s) from which it must be re-signed.
        self._user_sig: str | None = None
        self._refresh_at = 0

    def query(self, now: float, nonce: str) -> dict[str, str]:
        """A call's query parameters; `random` is fresh per attempt (from `nonce`)."""
        return {
            "sdkappid": str(self.sdk_app_id),
            "identifier": self.admin,
            "usersig": self.user_sig(now),
            "random": str(derived_uint32(nonce, "tencent-random")),
            "contenttype": "json",
        }

    def user_sig(self, now: float) -> str:
        issued = int(now)
        if self._user_sig is None or issued >= self._refresh_at:
            self._user_sig = tencent_user_sig(
                self._secret_key, self.sdk_app_id, self.admin, issued, USER_SIG_TTL_S
            )
            self._refresh_at = issued + USER_SIG_TTL_S - USER_SIG_REFRESH_BEFORE_S
        return self._user_sig

    def forget(self) -> None:
        """Sign anew on the next call (the vendor refused the sig)."""
        self._user_sig = None
