"""``imgate config check``, and which configuration file a command loads (``--config`` or
``IMGATE_CONFIG``; none: sandbox mode)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from imgate.config.access import check_exposure
from imgate.config.errors import ConfigError
from imgate.config.load import load_config
from imgate.config.model import GatewayConfig
from imgate.config.redaction import redacted_url


def check_config(flag: str | None) -> int:
    """`imgate config check`: what `imgate serve --config` would refuse at start-up,
    with the same message and exit status, short of binding and connecting."""
    if flag is None and not os.environ.get("IMGATE_CONFIG"):
        print(
            "imgate config check: no configuration given (--config FILE or IMGATE_CONFIG)",
            file=sys.stderr,
        )
        return 2
    path = resolve_config_path(flag, os.environ)
    if not isinstance(path, str):
        return 2
    try:
        config = load_config(path, os.environ)
        check_exposure(config)
        _check_tracing(config)
    except ConfigError as exc:
        print(f"imgate: configuration error: {exc}", file=sys.stderr)
        return 2
    print(_describe(path, config))
    return 0


def _check_tracing(config: GatewayConfig) -> None:
    if not config.tracing_otlp_endpoint:
        return
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tracing.otlp_endpoint", "tracing needs the otel extra: pip install 'imgate[otel]'"
        ) from None


def _describe(path: str, config: GatewayConfig) -> str:
    backends = ", ".join(f"{b.name} ({b.vendor})" for b in config.backends)
    parts = [
        f"{path}: OK",
        f"listen {config.listen}" + (" (TLS)" if config.tls else ""),
        f"backends {backends}; default {config.default_backend}",
        f"callers {len(config.callers)}" if config.callers else "no callers",
        f"store {redacted_url(config.store_url) if config.store_url else 'sqlite'}",
    ]
    if config.quota_url:
        parts.append("shared quota")
    return "; ".join(parts)


def resolve_config_path(flag: str | None, env: Mapping[str, str]) -> str | int | None:
    """The configuration file to load, None for sandbox mode, or an exit status after
    saying why a named file cannot be used (rule 20: never sandbox mode instead)."""
    source, path = ("--config", flag) if flag is not None else ("IMGATE_CONFIG", None)
    if flag is None:
        path = env.get("IMGATE_CONFIG")
    if path is None:
        return None
    if not path or not os.path.isfile(path):
        print(
            f"imgate: {source} names {path!r}, which is not a file; refusing to start"
            " (without a configuration imgate would run the sandbox, not your backends)",
            file=sys.stderr,
        )
        return 2
    return path
