"""The small top-level tables ([store], [quota], [metrics], [http], [health], [tracing],
[log]): each key maps to one GatewayConfig field."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.config.redaction import redacted_url
from imgate.config.values import checked_base_url, typed_value

LOG_FORMATS = ("text", "json")
"""[log] format: one line per record, or one JSON object per line."""
LOG_LEVELS = ("debug", "info", "warning", "error")


# [table] keys -> GatewayConfig fields.
SECTION_KEYS: dict[str, dict[str, tuple[str, type]]] = {
    "store": {
        "url": ("store_url", str),
        "batch_retention_s": ("batch_retention_s", float),
        "lease_s": ("lease_s", float),
    },
    "quota": {"url": ("quota_url", str), "key_prefix": ("quota_key_prefix", str)},
    "metrics": {"listen": ("metrics_listen", str)},
    "http": {"listen": ("http_listen", str), "console": ("http_console", bool)},
    "health": {"listen": ("health_listen", str)},
    "tracing": {"otlp_endpoint": ("tracing_otlp_endpoint", str)},
    "log": {"format": ("log_format", str), "level": ("log_level", str)},
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "log.format": LOG_FORMATS,
    "log.level": LOG_LEVELS,
}


def parse_section(table: str, raw: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """A small top-level table (SECTION_KEYS) as GatewayConfig field values."""
    if not isinstance(raw, dict):
        raise ConfigError(table, "must be a table")
    known = SECTION_KEYS[table]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{table}.{key}"
        if key not in known:
            raise ConfigError(path, "unknown key")
        name, expected = known[key]
        if expected is bool:
            if not isinstance(value, bool):
                raise ConfigError(path, f"expected true or false, got {type(value).__name__}")
        else:
            value = typed_value(path, value, expected, env)
        if path in _CHOICES:
            value = value.lower()
            if value not in _CHOICES[path]:
                raise ConfigError(path, f"expected one of {', '.join(_CHOICES[path])}")
        values[name] = value
    for name, path in (
        ("metrics_listen", "metrics.listen"),
        ("http_listen", "http.listen"),
        ("health_listen", "health.listen"),
    ):
        if name in values:
            try:
                split_listen(values[name])
            except ValueError as exc:
                raise ConfigError(path, str(exc)) from None
    if "tracing_otlp_endpoint" in values:
        checked_base_url("tracing.otlp_endpoint", values["tracing_otlp_endpoint"])
    if "quota_url" in values:
        _quota_url(values["quota_url"])
    if "quota_key_prefix" in values and not _KEY_PREFIX.match(values["quota_key_prefix"]):
        raise ConfigError("quota.key_prefix", "1-64 of A-Z a-z 0-9 _ . : -")
    return values


_QUOTA_SCHEMES = ("redis", "rediss", "unix")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _quota_url(url: str) -> None:
    shown = redacted_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("quota.url", f"{shown} is not a valid URL") from None
    if parts.scheme not in _QUOTA_SCHEMES:
        raise ConfigError("quota.url", f"{shown}: expected redis://, rediss:// or unix://")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError("quota.url", f"{shown}: a unix:// URL needs the socket path")
    if parts.scheme != "unix" and (not parts.hostname or port == 0):
        raise ConfigError("quota.url", f"{shown}: expected a host and an optional port")
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ConfigError("quota.url", f"{shown}: the path must be a database number")
