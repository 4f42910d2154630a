"""[backends.NAME] tables: a vendor backend, its keys checked against the vendor's spec
(credentials, regions, recall API, caps) and unset limits taken from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgate.config.errors import ConfigError
from imgate.config.model import DEFAULT_MAX_RESPONSE_BYTES, BackendConfig
from imgate.config.redaction import Secrets
from imgate.config.values import INT32_MAX, UINT32_MAX, checked_base_url, typed_value
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.registry import BY_VENDOR

BACKEND_KEYS: dict[str, type] = {
    "vendor": str,
    "base_url": str,
    "backup_base_url": str,
    "region": str,
    "recipients_per_call": int,
    "call_limit": int,
    "call_window_s": float,
    "recipient_limit": int,
    "recipient_window_s": float,
    "block_s": float,
    "max_in_flight": int,
    "max_running_batches": int,
    "max_queued_batches": int,
    "request_timeout_s": float,
    "max_attempts": int,
    "max_response_bytes": int,
    "recallable": bool,
    "recall_call_limit": int,
    "recall_call_window_s": float,
    "recall_block_s": float,
}
_RECALL_KEYS = frozenset(k for k in BACKEND_KEYS if k.startswith("recall"))
"""Keys of a vendor with a recall API only."""


def parse_backend(name: str, raw: Any, env: Mapping[str, str]) -> BackendConfig:
    """The [backends.NAME] table, checked against its vendor's spec."""
    prefix = f"backends.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(prefix, "must be a table")
    vendor = raw.get("vendor")
    if vendor is None:
        raise ConfigError(f"{prefix}.vendor", "missing")
    if vendor not in BY_VENDOR:
        known = ", ".join(sorted(BY_VENDOR))
        raise ConfigError(f"{prefix}.vendor", f"unknown vendor {vendor!r} (known: {known})")
    spec = BY_VENDOR[vendor].spec
    allowed = {**BACKEND_KEYS, **spec.credential_fields}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", "unknown key")
        if key in _RECALL_KEYS and spec.recall is None:
            raise ConfigError(f"{prefix}.{key}", f"{vendor} has no recall API")
        if allowed[key] is bool:
            if not isinstance(value, bool):
                raise ConfigError(
                    f"{prefix}.{key}", f"expected true or false, got {type(value).__name__}"
                )
            values[key] = value
            continue
        # Credentials are the vendor's numbers (a Tencent SDKAppID is a uint32).
        maximum = UINT32_MAX if key in spec.credential_fields else INT32_MAX
        values[key] = typed_value(f"{prefix}.{key}", value, allowed[key], env, maximum)
    if "region" in values:
        region = spec.regions.get(values["region"])
        if region is None:
            known = ", ".join(spec.regions) or "none"
            raise ConfigError(f"{prefix}.region", f"unknown {vendor} region (known: {known})")
        for key in ("base_url", "backup_base_url"):
            if key in values:
                raise ConfigError(f"{prefix}.{key}", "set either region or base_url, not both")
        values["base_url"] = region.base_url
        values["backup_base_url"] = region.backup_base_url
    if spec.default_base_url:
        values.setdefault("base_url", spec.default_base_url)
    for key in ("base_url", *spec.credential_fields):
        if key not in values:
            raise ConfigError(f"{prefix}.{key}", "missing")
    cap = spec.limits.recipients_per_call
    if values.get("recipients_per_call", 0) > cap:
        raise ConfigError(
            f"{prefix}.recipients_per_call", f"at most {cap} (the vendor's documented maximum)"
        )
    base_url = checked_base_url(f"{prefix}.base_url", values["base_url"])
    if "backup_base_url" in values:
        values["backup_base_url"] = checked_base_url(
            f"{prefix}.backup_base_url", values["backup_base_url"]
        )
    return backend_with_defaults(name, vendor, base_url, values, sandbox=False)


def backend_with_defaults(
    name: str, vendor: str, base_url: str, values: Mapping[str, Any], *, sandbox: bool
) -> BackendConfig:
    """A backend whose unset limits come from the vendor's published ones."""
    spec = BY_VENDOR[vendor].spec
    limits = spec.limits
    return BackendConfig(
        name=name,
        vendor=vendor,
        base_url=base_url,
        credentials=Secrets({k: values[k] for k in spec.credential_fields}),
        recipients_per_call=values.get("recipients_per_call", limits.recipients_per_call),
        call_limit=values.get("call_limit", limits.call_limit),
        call_window_s=values.get("call_window_s", limits.call_window_s),
        recipient_limit=values.get("recipient_limit", limits.recipient_limit),
        recipient_window_s=values.get("recipient_window_s", limits.recipient_window_s),
        block_s=values.get("block_s", limits.block_s),
        max_in_flight=values.get("max_in_flight", 0),
        max_running_batches=values.get("max_running_batches", 64),
        max_queued_batches=values.get("max_queued_batches", 100_000),
        request_timeout_s=values.get("request_timeout_s", 10.0),
        max_attempts=values.get("max_attempts", 5),
        max_response_bytes=values.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES),
        backup_base_url=values.get("backup_base_url", ""),
        sandbox=sandbox,
        **_recall_defaults(spec, values),
    )


def _recall_defaults(spec: VendorSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """A backend's recall keys; unset ones from the vendor's recall API. Recallable by
    default where the send API returns the message ids recall needs anyway."""
    recall = spec.recall
    if recall is None:
        return {}
    return {
        "recallable": values.get("recallable", not recall.ids_on_request),
        "recall_call_limit": values.get("recall_call_limit", recall.call_limit),
        "recall_call_window_s": values.get("recall_call_window_s", recall.call_window_s),
        "recall_block_s": values.get("recall_block_s", recall.block_s),
    }
