"""Where a GatewayConfig comes from: a TOML file, parsed TOML, or sandbox mode (CONTRACT.md §3).

This module checks the top-level keys and how the tables fit together (the default
backend, the backends callers and webhooks name); each table is parsed by its own module:
`sections`, `access`, `backends`, `webhooks`, with values read through `values`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgate.config.access import parse_callers, parse_tls
from imgate.config.addresses import split_listen
from imgate.config.backends import backend_with_defaults, parse_backend
from imgate.config.errors import ConfigError
from imgate.config.model import (
    DEFAULT_BATCH_RETENTION_S,
    DEFAULT_LISTEN,
    WEBHOOK_EVENT_TYPES,
    GatewayConfig,
    WebhookConfig,
)
from imgate.config.sections import SECTION_KEYS, parse_section
from imgate.config.values import typed_value
from imgate.config.webhooks import parse_webhooks
from imgate.sandbox.inbox import SANDBOX_INBOX, SANDBOX_WEBHOOK_SECRET, inbox_path
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.registry import VENDORS

TOP_KEYS = {
    "listen": str,
    "default_backend": str,
    "max_recipients_per_request": int,
    "max_recipients_per_list": int,
    "max_schedule_ahead_s": float,
    "shutdown_grace_s": float,
    "state_dir": str,
    "backends": dict,
    "store": dict,
    "quota": dict,
    "allow_unauthenticated": bool,
    "callers": dict,
    "tls": dict,
    "metrics": dict,
    "http": dict,
    "health": dict,
    "tracing": dict,
    "log": dict,
    "webhooks": list,
}


def default_state_dir(env: Mapping[str, str]) -> str:
    """$IMGATE_STATE_DIR, else ~/.local/state/imgate (XDG_STATE_HOME respected)."""
    if env.get("IMGATE_STATE_DIR"):
        return env["IMGATE_STATE_DIR"]
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "imgate")


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> GatewayConfig:
    """Build a GatewayConfig from parsed TOML, substituting `${NAME}` from `env`."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in TOP_KEYS:
            raise ConfigError(key, "unknown key")
        if key == "callers":
            values["callers"] = parse_callers(value, env)
        elif key == "webhooks":
            continue  # after [callers]: its `callers` must name them
        elif key == "tls":
            values["tls"] = parse_tls(value, env)
        elif key == "allow_unauthenticated":
            if not isinstance(value, bool):
                raise ConfigError(key, f"expected true or false, got {type(value).__name__}")
            values[key] = value
        elif key in SECTION_KEYS:
            values.update(parse_section(key, value, env))
        elif key != "backends":
            values[key] = typed_value(key, value, TOP_KEYS[key], env)
    if "listen" in values:
        try:
            split_listen(values["listen"])
        except ValueError as exc:
            raise ConfigError("listen", str(exc)) from None
    raw_backends = raw.get("backends")
    if not isinstance(raw_backends, dict) or not raw_backends:
        raise ConfigError("backends", "at least one [backends.NAME] table is required")
    backends = tuple(parse_backend(name, body, env) for name, body in raw_backends.items())
    default = values.pop("default_backend", None)
    if default is None:
        if len(backends) > 1:
            raise ConfigError("default_backend", "required when more than one backend exists")
        default = backends[0].name
    elif default not in raw_backends:
        raise ConfigError("default_backend", f"no backend named {default!r}")
    for caller in values.get("callers", ()):
        for name in caller.backends or ():
            if name not in raw_backends:
                raise ConfigError(f"callers.{caller.name}.backends", f"no backend named {name!r}")
    if "webhooks" in raw:
        values["webhooks"] = parse_webhooks(raw["webhooks"], env, values.get("callers", ()))
        retention = values.get("batch_retention_s", DEFAULT_BATCH_RETENTION_S)
        for number, hook in enumerate(values["webhooks"]):
            if hook.retry_for_s > retention:
                raise ConfigError(
                    f"webhooks[{number}].retry_for_s",
                    f"at most store.batch_retention_s ({retention:g}): an event is purged"
                    " with its batch",
                )
    values.setdefault("state_dir", default_state_dir(env))
    return GatewayConfig(backends=backends, default_backend=default, **values)


def load_config(path: str | Path, env: Mapping[str, str]) -> GatewayConfig:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    return parse_config(raw, env)


SANDBOX_DEFAULT_BACKEND = "tencent"
"""Sandbox mode's default backend: Tencent takes an empty sender (the app admin), so the
most natural first `imgate send --to bob --text hi` works without `--from`."""


def sandbox_config(
    sandbox_url: str,
    listen: str = DEFAULT_LISTEN,
    *,
    time_scale: float = 1.0,
    store_url: str = "memory",
    webhook_inbox: bool = False,
) -> GatewayConfig:
    """Sandbox mode: one backend per vendor, named after it, pointing at the emulators;
    batches in memory unless `store_url` says otherwise; with `webhook_inbox`, every
    event is delivered to the sandbox's inbox (`GET /sandbox/webhooks/default`).

    `time_scale` must be the emulators' (`SandboxConfig.time_scale`): the backends' rate
    windows and blocks are divided by it too, so the gateway paces to the scaled quotas.
    """
    backends = tuple(
        backend_with_defaults(
            plugin.vendor,
            plugin.vendor,
            sandbox_url,
            {
                **plugin.spec.sandbox_credentials,
                **_scaled_windows(plugin.spec, time_scale),
            },
            sandbox=True,
        )
        for plugin in VENDORS
    )
    default = next((b.name for b in backends if b.name == SANDBOX_DEFAULT_BACKEND), None)
    return GatewayConfig(
        backends=backends,
        default_backend=default or backends[0].name,
        listen=listen,
        sandbox=True,
        store_url=store_url,
        state_dir=default_state_dir(os.environ),
        webhooks=(
            WebhookConfig(
                sandbox_url + inbox_path(SANDBOX_INBOX),
                SANDBOX_WEBHOOK_SECRET,
                WEBHOOK_EVENT_TYPES,
            ),
        )
        if webhook_inbox
        else (),
        sandbox_url=sandbox_url,
    )


def _scaled_windows(spec: VendorSpec, time_scale: float) -> dict[str, float]:
    if time_scale == 1.0:
        return {}
    scaled = {
        name: getattr(spec.limits, name) / time_scale
        for name in ("call_window_s", "recipient_window_s", "block_s")
    }
    if spec.recall is not None:
        scaled["recall_call_window_s"] = spec.recall.call_window_s / time_scale
        scaled["recall_block_s"] = spec.recall.block_s / time_scale
    return scaled
