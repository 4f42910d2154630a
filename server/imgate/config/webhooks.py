"""[[webhooks]] tables: the endpoints told when batches end (rule 28). Their url and
secret are checked without ever echoing them: both may carry credentials."""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Mapping
from typing import Any

from imgate.config.errors import ConfigError
from imgate.config.model import (
    WEBHOOK_EVENT_TYPES,
    WEBHOOK_SECRET_PREFIX,
    CallerConfig,
    WebhookConfig,
)
from imgate.config.values import typed_value

# Standard Webhooks: the secret is 24 to 64 random bytes, base64, after "whsec_".
_WEBHOOK_SECRET_BYTES = (24, 64)


# [[webhooks]] keys -> their types (what tests/test_config_docs.py checks).
WEBHOOK_KEYS: dict[str, type] = {
    "url": str,
    "secret": str,
    "events": list,
    "callers": list,
    "retry_for_s": float,
    "timeout_s": float,
}


def parse_webhooks(
    raw: Any, env: Mapping[str, str], callers: tuple[CallerConfig, ...]
) -> tuple[WebhookConfig, ...]:
    """The [[webhooks]] tables; `callers` are the configured ones, which a hook may name."""
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise ConfigError("webhooks", "must be [[webhooks]] tables")
    known_callers = {caller.name for caller in callers} or {""}
    webhooks: list[WebhookConfig] = []
    seen: dict[str, str] = {}
    for number, body in enumerate(raw):
        prefix = f"webhooks[{number}]"
        for key in body:
            if key not in WEBHOOK_KEYS:
                raise ConfigError(f"{prefix}.{key}", "unknown key")
        for key in ("url", "secret", "events"):
            if key not in body:
                raise ConfigError(f"{prefix}.{key}", "missing")
        url = _webhook_url(f"{prefix}.url", typed_value(f"{prefix}.url", body["url"], str, env))
        if url in seen:
            raise ConfigError(f"{prefix}.url", f"the same url as {seen[url]}")
        seen[url] = prefix
        secret = _webhook_secret(
            f"{prefix}.secret", typed_value(f"{prefix}.secret", body["secret"], str, env)
        )
        events = _names(f"{prefix}.events", body["events"])
        for event in events:
            if event not in WEBHOOK_EVENT_TYPES:
                raise ConfigError(
                    f"{prefix}.events",
                    f"unknown event {event[:64]!r} (known: " + ", ".join(WEBHOOK_EVENT_TYPES) + ")",
                )
        only: tuple[str, ...] | None = None
        if "callers" in body:
            only = _names(f"{prefix}.callers", body["callers"])
            for name in only:
                if name not in known_callers:
                    raise ConfigError(f"{prefix}.callers", f"no caller named {name[:64]!r}")
        webhooks.append(
            WebhookConfig(
                url,
                secret,
                events,
                only,
                typed_value(f"{prefix}.retry_for_s", body.get("retry_for_s", 86_400.0), float, env),
                typed_value(f"{prefix}.timeout_s", body.get("timeout_s", 10.0), float, env),
            )
        )
    return tuple(webhooks)


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A non-empty list of distinct strings."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a non-empty list of strings")
    if len(set(value)) != len(value):
        raise ConfigError(key, "lists a name twice")
    return tuple(value)


def _webhook_url(key: str, value: str) -> str:
    # Never echoed: a url may carry a token in its query or credentials.
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        raise ConfigError(key, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConfigError(key, "must be http(s)://host[:port]/path (no #fragment)")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ConfigError(key, "must not hold spaces or control characters")
    return value


def _webhook_secret(key: str, value: str) -> str:
    # Never echoed, in whole or in part.
    low, high = _WEBHOOK_SECRET_BYTES
    problem = (
        f'must be "{WEBHOOK_SECRET_PREFIX}" + base64 of {low}-{high} random bytes, e.g.'
        f' "{WEBHOOK_SECRET_PREFIX}$(openssl rand -base64 32)"'
    )
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        raise ConfigError(key, problem)
    try:
        size = len(base64.b64decode(value.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True))
    except (binascii.Error, ValueError):
        raise ConfigError(key, problem) from None
    if not low <= size <= high:
        raise ConfigError(key, problem)
    return value
