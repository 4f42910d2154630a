"""A backend's vendor endpoints: the primary URL and, when configured, the backup the
vendors tell callers to fail over to (vendors.md §3: Yunxin primary/backup domains,
Tencent's my-imcloud.com hosts).

A call that certainly was not processed (RETRY: connection refused before the request
was written, HTTP 502) moves the backend to the other endpoint, and so does an answer by
which the vendor says it is busy or unavailable (Yunxin 503/514: CallResult
.vendor_unavailable), although that call may have been processed and is never resent:
only later calls go elsewhere. The switch is sticky: the backend stays on the endpoint
that works until it fails the same way.
"""

from __future__ import annotations

import logging

from imgate.vendors.base.translator import CallResult, Disposition

log = logging.getLogger("imgate.dispatch")


class Endpoints:
    """The base URL to call now, for one backend; each request names its own path."""

    def __init__(self, name: str, base_url: str, backup_base_url: str) -> None:
        self._name = name
        self._urls = [base_url] + ([backup_base_url] if backup_base_url else [])
        self._current = 0

    def url(self, path: str) -> str:
        """Where a request for `path` goes now (the translator's VendorRequest.path)."""
        return self._urls[self._current] + path

    def observe(self, result: CallResult) -> None:
        """Fail over after a call the vendor certainly did not process, or one it
        answered as unavailable."""
        unavailable = result.disposition is Disposition.RETRY or result.vendor_unavailable
        if unavailable and len(self._urls) > 1:
            self._current = (self._current + 1) % len(self._urls)
            log.warning(
                "backend %s: vendor unavailable (%s); next calls go to the %s endpoint",
                self._name,
                result.vendor_code or result.reason,
                "backup" if self._current else "primary",
            )
