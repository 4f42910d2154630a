"""One configuration value: `${NAME}` replaced from the environment, then its type and range
checked (rule 25), and base URLs. Every table's parser reads its numbers and strings
through here, so the limits are the same wherever a key lives."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from imgate.config.errors import ConfigError

INT32_MAX = 2**31 - 1
"""Largest number a config key may hold: counts are reported as int32 by the API
(BackendLimits, BatchSummary) and seconds beyond it are no longer a configuration but a
typo (CONTRACT §8 rule 25)."""
UINT32_MAX = 2**32 - 1
_ZERO_ALLOWED = frozenset({"recipient_limit"})  # 0 = "not counted"
_MINIMUM_S: Mapping[str, float] = {
    # Durations below these are mistakes, not configurations (issue 22: lease_s = 1e-7
    # was accepted). A lease: heartbeats run every lease_s / 3 and a PostgreSQL session
    # idle in a transaction that long is ended. Windows and blocks stay small enough for
    # tests that scale time down.
    "lease_s": 1.0,
    "batch_retention_s": 1.0,
    "shutdown_grace_s": 0.01,
    "request_timeout_s": 0.01,
    "call_window_s": 0.001,
    "recipient_window_s": 0.001,
    "block_s": 0.001,
    "recall_call_window_s": 0.001,
    "recall_block_s": 0.001,
    "timeout_s": 0.01,
}
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def typed_value(
    key: str, value: Any, expected: type, env: Mapping[str, str], maximum: int = INT32_MAX
) -> Any:
    """`value` checked as `expected` (after `${NAME}` substitution); numbers must be finite,
    greater than 0 (recipient_limit may be 0) and at most `maximum` (rule 25)."""
    if isinstance(value, str):
        match = _ENV_REF.match(value)
        if match:
            value = _from_env(key, match.group(1), expected, env)
    # bool is an int in Python; a TOML `true` where a number belongs is still a mistake.
    if isinstance(value, bool) or not (
        isinstance(value, expected) or (expected is float and isinstance(value, int))
    ):
        raise ConfigError(key, f"expected {expected.__name__}, got {type(value).__name__}")
    if isinstance(value, int | float):
        if expected is float:
            value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key, "must be a finite number")
        name = key.rsplit(".", 1)[-1]
        if value < 0 or (value == 0 and name not in _ZERO_ALLOWED):
            raise ConfigError(key, "must be greater than 0")
        if value < _MINIMUM_S.get(name, 0.0):
            raise ConfigError(key, f"must be at least {_MINIMUM_S[name]:g} seconds")
        if value > maximum:
            raise ConfigError(key, f"must be at most {maximum}")
    return value


def _from_env(key: str, name: str, expected: type, env: Mapping[str, str]) -> Any:
    """An environment variable's text as `expected` (numbers parsed, strings as is)."""
    if name not in env:
        raise ConfigError(key, f"environment variable {name} is not set")
    text = env[name]
    if expected is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(key, f"${{{name}}} is not an integer") from None
    if expected is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigError(key, f"${{{name}}} is not a number") from None
    return text


def check_otlp_endpoint(key: str, value: str) -> str:
    """An OTLP/gRPC collector's URL, checked (ConfigError naming `key`)."""
    return checked_base_url(key, value)


def checked_base_url(key: str, value: str) -> str:
    """`value` without its trailing /, once it is http(s)://host[:port] (ConfigError naming
    `key` otherwise)."""
    base_url = value.rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", base_url):
        raise ConfigError(key, "must be http(s)://host[:port] with no path")
    return base_url
