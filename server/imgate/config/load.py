"""Gateway configuration: a typed, frozen object loaded from TOML (CONTRACT.md §3).

`${NAME}` string values are replaced from the environment; every error names the key by
its full path (e.g. `backends.tx.secret_key`). Credentials never appear in a repr, a log
line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgate.config.addresses import split_listen
from imgate.config.pem import pem_problem
from imgate.sandbox.inbox import SANDBOX_INBOX, SANDBOX_WEBHOOK_SECRET, inbox_path
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.registry import BY_VENDOR, VENDORS

DEFAULT_LISTEN = "127.0.0.1:50051"
LOG_FORMATS = ("text", "json")
"""[log] format: one line per record, or one JSON object per line."""
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_MAX_RESPONSE_BYTES = 4 << 20
DEFAULT_BATCH_RETENTION_S = 604_800.0
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


class ConfigError(Exception):
    """The configuration cannot be used; `key` is the full path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class Secrets(Mapping[str, Any]):
    """Vendor credentials: a read-only mapping whose repr never shows the values."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return "Secrets(" + ", ".join(f"{k}=***" for k in self._values) + ")"


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One named vendor backend."""

    name: str
    """The name callers put in BatchSendRequest.backend."""
    vendor: str
    """Vendor id: one of imgate.vendors.registry.VENDORS."""
    base_url: str
    """Scheme + host (+ port); the vendor's documented path is appended."""
    credentials: Secrets = field(repr=False)
    """Vendor credentials (keys declared by the vendor's spec)."""
    recipients_per_call: int
    """Most recipients in one vendor call."""
    call_limit: int
    """At most this many calls ..."""
    call_window_s: float
    """... in any window of this many seconds."""
    recipient_limit: int
    """At most this many recipients (0 = not counted) ..."""
    recipient_window_s: float
    """... in any window of this many seconds."""
    block_s: float
    """How long the backend pauses after a vendor rate-limit refusal."""
    max_in_flight: int = 0
    """Concurrent vendor calls; 0 = derived from the call quota and the measured round
    trip (Little's law, see imgate.pipeline.permits)."""
    max_running_batches: int = 64
    """Batches this gateway sends at once on the backend; the others wait QUEUED in the
    store (memory does not grow with the backlog)."""
    max_queued_batches: int = 100_000
    """Past this many QUEUED batches on the backend, SubmitBatch is RESOURCE_EXHAUSTED."""
    request_timeout_s: float = 10.0
    """Timeout of one vendor call."""
    max_attempts: int = 5
    """Most calls per chunk for failures that were certainly not processed."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """Largest vendor answer read; a larger one is never buffered beyond this and makes
    the call's recipients UNCERTAIN (CONTRACT §8 rule 24)."""
    backup_base_url: str = ""
    """Where calls go after one failed certainly unprocessed (connection refused, HTTP
    502) on the current base URL; empty = no failover. Set from `region` or given."""
    sandbox: bool = False
    """Whether this backend points at the built-in emulators."""
    recallable: bool = False
    """Whether RecallBatch may recall this backend's batches (through the vendor's recall
    API). On a vendor whose send API returns message ids only when asked (Yunxin legacy),
    it also asks for them on every batch (returnMsgid: 100 recipients per call)."""
    recall_call_limit: int = 1
    """At most this many recall calls (one message to one recipient each) ..."""
    recall_call_window_s: float = 1.0
    """... in any window of this many seconds: the recall API's own quota."""
    recall_block_s: float = 1.0
    """How long recalls pause after the vendor refused one for rate."""


@dataclass(frozen=True, slots=True)
class CallerConfig:
    """One `[callers.NAME]` table: who may call the gateway (CONTRACT §6)."""

    name: str
    """The caller's name: its batches, request ids and log lines are keyed by it."""
    token_sha256: bytes = field(repr=False)
    """SHA-256 digest of its bearer token (never the token itself)."""
    backends: tuple[str, ...] | None = None
    """The backends it may use; None = all."""
    weight: int = 1
    """Its share of a backend's quota when callers compete for it (rule 19)."""

    def may_use(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The `[tls]` table: serve TLS, and with `client_ca_file` require client certificates."""

    cert_file: str
    """PEM certificate chain of the server."""
    key_file: str
    """PEM private key of the server."""
    client_ca_file: str = ""
    """PEM CA(s) that sign client certificates; set = mTLS (a client without one is refused)."""


WEBHOOK_EVENT_TYPES = ("batch.ended", "recall.ended")
"""What a `[[webhooks]]` endpoint may ask to be told (CONTRACT §9 rule 28)."""
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret
# Standard Webhooks: the secret is 24 to 64 random bytes, base64, after "whsec_".
_WEBHOOK_SECRET_BYTES = (24, 64)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One `[[webhooks]]` table: an endpoint told by HTTP POST when batches end (rule 28)."""

    url: str
    """Where events are POSTed (http:// or https://); redirects are never followed."""
    secret: str = field(repr=False)
    """"whsec_" + base64 of 24-64 random bytes: the key every delivery is signed with
    (Standard Webhooks); never logged."""
    events: tuple[str, ...]
    """The event types it is told: "batch.ended", "recall.ended"."""
    callers: tuple[str, ...] | None = None
    """Only these callers' batches; None = every caller's."""
    retry_for_s: float = 86_400.0
    """How long an event is retried (from the batch's end) before it is given up."""
    timeout_s: float = 10.0
    """Timeout of one delivery attempt."""

    @property
    def shown_url(self) -> str:
        """The url for logs: scheme, host and path, without credentials or query."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole gateway."""

    backends: tuple[BackendConfig, ...]
    """Configured backends, in file order."""
    default_backend: str
    """Backend used when a request names none."""
    listen: str = DEFAULT_LISTEN
    """host:port the gRPC server binds."""
    max_recipients_per_request: int = 100_000
    """Most recipients one BatchSendRequest may carry."""
    max_recipients_per_list: int = 10_000_000
    """Most unique recipients one UploadRecipients list may hold."""
    max_schedule_ahead_s: float = 2_592_000.0
    """How far ahead SubmitBatchRequest.send_after may be (30 days)."""
    state_dir: str = ""
    """Where the gateway keeps its state (the SQLite store); see default_state_dir()."""
    store_url: str = ""
    """[store] url: "memory", "sqlite:///PATH", "postgresql://..." or empty for imgate.db
    in state_dir."""
    batch_retention_s: float = DEFAULT_BATCH_RETENTION_S
    """[store] batch_retention_s: how long an ended batch (and its request_id) is kept."""
    lease_s: float = 30.0
    """[store] lease_s: after this long a dead replica's batches are resumed by others."""
    quota_url: str = ""
    """[quota] url: Redis shared by replicas for vendor quotas (redis://, rediss://,
    unix://); empty = quotas counted in this process only."""
    quota_key_prefix: str = "imgate"
    """[quota] key_prefix: prefix of every Redis key the gateway uses."""
    shutdown_grace_s: float = 15.0
    """On SIGTERM, how long calls in flight may take to finish."""
    metrics_listen: str = ""
    """[metrics] listen: host:port serving Prometheus text at GET /metrics; empty = off."""
    http_listen: str = ""
    """[http] listen: host:port serving the API as HTTP/JSON (and the console); empty = off."""
    http_console: bool = True
    """[http] console: serve the web console at / on the HTTP port."""
    health_listen: str = ""
    """[health] listen: host:port serving grpc.health.v1 alone, in plaintext and without a
    token, for probes that cannot speak TLS (Kubernetes grpc probes); empty = off."""
    tracing_otlp_endpoint: str = ""
    """[tracing] otlp_endpoint: OTLP/gRPC collector for OpenTelemetry traces; empty = off
    (on needs the `otel` extra: pip install 'imgate[otel]')."""
    log_format: str = "text"
    """[log] format: "text" (one line per record) or "json" (one object per line)."""
    log_level: str = "info"
    """[log] level: debug, info, warning or error."""
    sandbox: bool = False
    """Sandbox mode: the backends are the built-in emulators."""
    allow_unauthenticated: bool = False
    """Without [callers], serve on a non-loopback address anyway (rule 18)."""
    callers: tuple[CallerConfig, ...] = ()
    """[callers.NAME] tables; empty = one anonymous caller ("") and no authentication."""
    tls: TLSConfig | None = None
    """[tls] table; None = plaintext gRPC."""
    webhooks: tuple[WebhookConfig, ...] = ()
    """[[webhooks]] tables: endpoints told when batches end (rule 28)."""
    sandbox_url: str = ""
    """Sandbox mode: the emulators' base URL, whose /sandbox/ control API the HTTP port
    serves too (same origin for the console); empty otherwise. Not a file key."""

    def backend(self, name: str) -> BackendConfig | None:
        """The backend called `name` (empty = the default), or None."""
        wanted = name or self.default_backend
        return next((b for b in self.backends if b.name == wanted), None)


_TOP_KEYS = {
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
# [table] keys -> GatewayConfig fields.
_SECTION_KEYS: dict[str, dict[str, tuple[str, type]]] = {
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


def default_state_dir(env: Mapping[str, str]) -> str:
    """$IMGATE_STATE_DIR, else ~/.local/state/imgate (XDG_STATE_HOME respected)."""
    if env.get("IMGATE_STATE_DIR"):
        return env["IMGATE_STATE_DIR"]
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "imgate")


def _section(table: str, raw: Any, env: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(table, "must be a table")
    known = _SECTION_KEYS[table]
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
            value = _typed(path, value, expected, env)
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
        _base_url("tracing.otlp_endpoint", values["tracing_otlp_endpoint"])
    if "quota_url" in values:
        _quota_url(values["quota_url"])
    if "quota_key_prefix" in values and not _KEY_PREFIX.match(values["quota_key_prefix"]):
        raise ConfigError("quota.key_prefix", "1-64 of A-Z a-z 0-9 _ . : -")
    return values


_QUOTA_SCHEMES = ("redis", "rediss", "unix")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def redacted_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***, for logs and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparseable URL)"
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def hide_password(text: str, url: str) -> str:
    """`text` (an error's message, say) with `url`'s password, if any, replaced by ***."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text


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


# [callers.NAME] and [tls] keys -> their types (what tests/test_config_docs.py checks).
_CALLER_KEYS: dict[str, type] = {"token_sha256": str, "backends": list, "weight": int}
_TLS_KEYS: dict[str, type] = {"cert_file": str, "key_file": str, "client_ca_file": str}
_CALLER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _callers_section(raw: Any, env: Mapping[str, str]) -> tuple[CallerConfig, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("callers", "must hold at least one [callers.NAME] table")
    callers: list[CallerConfig] = []
    seen: dict[bytes, str] = {}
    for name, body in raw.items():
        prefix = f"callers.{name}"
        # Names go into log lines and the store: keep them plain (rule 22).
        if not _CALLER_NAME.match(name):
            raise ConfigError(prefix, "caller names are 1-64 of A-Z a-z 0-9 _ . -")
        if not isinstance(body, dict):
            raise ConfigError(prefix, "must be a table")
        for key in body:
            if key not in _CALLER_KEYS:
                raise ConfigError(f"{prefix}.{key}", "unknown key")
        if "token_sha256" not in body:
            raise ConfigError(f"{prefix}.token_sha256", "missing (imgate token hash)")
        digest_hex = _typed(f"{prefix}.token_sha256", body["token_sha256"], str, env)
        digest_hex = digest_hex.strip().lower()
        if not _SHA256_HEX.match(digest_hex):
            # Never echo the value: someone may have pasted the token itself here.
            raise ConfigError(
                f"{prefix}.token_sha256",
                "must be 64 hex digits, the SHA-256 of the token (imgate token hash)",
            )
        digest = bytes.fromhex(digest_hex)
        if digest in seen:
            raise ConfigError(f"{prefix}.token_sha256", f"same token as callers.{seen[digest]}")
        seen[digest] = name
        backends: tuple[str, ...] | None = None
        if "backends" in body:
            listed = body["backends"]
            if not isinstance(listed, list) or not all(isinstance(b, str) for b in listed):
                raise ConfigError(f"{prefix}.backends", "must be a list of backend names")
            backends = tuple(listed)
        weight = _typed(f"{prefix}.weight", body.get("weight", 1), int, env, maximum=1000)
        callers.append(CallerConfig(name, digest, backends, weight))
    return tuple(callers)


# [[webhooks]] keys -> their types (what tests/test_config_docs.py checks).
_WEBHOOK_KEYS: dict[str, type] = {
    "url": str,
    "secret": str,
    "events": list,
    "callers": list,
    "retry_for_s": float,
    "timeout_s": float,
}


def _webhooks_section(
    raw: Any, env: Mapping[str, str], callers: tuple[CallerConfig, ...]
) -> tuple[WebhookConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise ConfigError("webhooks", "must be [[webhooks]] tables")
    known_callers = {caller.name for caller in callers} or {""}
    webhooks: list[WebhookConfig] = []
    seen: dict[str, str] = {}
    for number, body in enumerate(raw):
        prefix = f"webhooks[{number}]"
        for key in body:
            if key not in _WEBHOOK_KEYS:
                raise ConfigError(f"{prefix}.{key}", "unknown key")
        for key in ("url", "secret", "events"):
            if key not in body:
                raise ConfigError(f"{prefix}.{key}", "missing")
        url = _webhook_url(f"{prefix}.url", _typed(f"{prefix}.url", body["url"], str, env))
        if url in seen:
            raise ConfigError(f"{prefix}.url", f"the same url as {seen[url]}")
        seen[url] = prefix
        secret = _webhook_secret(
            f"{prefix}.secret", _typed(f"{prefix}.secret", body["secret"], str, env)
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
                _typed(f"{prefix}.retry_for_s", body.get("retry_for_s", 86_400.0), float, env),
                _typed(f"{prefix}.timeout_s", body.get("timeout_s", 10.0), float, env),
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


def _tls_section(raw: Any, env: Mapping[str, str]) -> TLSConfig:
    if not isinstance(raw, dict):
        raise ConfigError("tls", "must be a table")
    values: dict[str, str] = {}
    for key, value in raw.items():
        if key not in _TLS_KEYS:
            raise ConfigError(f"tls.{key}", "unknown key")
        values[key] = _typed(f"tls.{key}", value, str, env)
    for key in ("cert_file", "key_file"):
        if not values.get(key):
            raise ConfigError(f"tls.{key}", "missing")
    for key, path in values.items():
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"tls.{key}", f"cannot read {path}")
    tls = TLSConfig(**values)
    check_tls_files(tls)
    return tls


def check_tls_files(tls: TLSConfig) -> None:
    """ConfigError naming `tls.cert_file`, `tls.key_file` or `tls.client_ca_file` when
    one cannot be used: unreadable, no PEM, or a key that is not the certificate's."""
    found = pem_problem(tls.cert_file, tls.key_file, tls.client_ca_file or None)
    if found is not None:
        which, problem = found
        key = {"cert": "cert_file", "key": "key_file", "ca": "client_ca_file"}[which]
        raise ConfigError(f"tls.{key}", problem)


def read_tls_files(tls: TLSConfig) -> tuple[bytes, bytes, bytes | None]:
    """(certificate chain, private key, client CA or None), read now so that a restart
    picks up rotated files; errors name the key."""
    check_tls_files(tls)
    contents: dict[str, bytes] = {}
    for key in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, key)
        if not path:
            continue
        try:
            with open(path, "rb") as file:
                contents[key] = file.read()
        except OSError as exc:
            raise ConfigError(f"tls.{key}", f"cannot read {path}: {exc.strerror}") from None
    return contents["cert_file"], contents["key_file"], contents.get("client_ca_file")


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_exposure(config: GatewayConfig) -> None:
    """Rule 18: no unauthenticated listener (gRPC or HTTP) beyond loopback unless asked
    for by name."""
    if config.callers or config.allow_unauthenticated:
        return
    listeners = [("listen", config.listen)]
    if config.http_listen:
        listeners.append(("http.listen", config.http_listen))
    for key, listen in listeners:
        host, _ = split_listen(listen)
        if is_loopback(host):
            continue
        raise ConfigError(
            "allow_unauthenticated",
            f"{key} = {listen} is not a loopback address and no [callers] are configured:"
            " anyone who reaches the port could send as any sender. Configure [callers.NAME]"
            " with token_sha256, or set allow_unauthenticated = true",
        )


_BACKEND_KEYS: dict[str, type] = {
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
_RECALL_KEYS = frozenset(k for k in _BACKEND_KEYS if k.startswith("recall"))
"""Keys of a vendor with a recall API only."""


def _typed(
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


def _backend(name: str, raw: Any, env: Mapping[str, str]) -> BackendConfig:
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
    allowed = {**_BACKEND_KEYS, **spec.credential_fields}
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
        values[key] = _typed(f"{prefix}.{key}", value, allowed[key], env, maximum)
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
    base_url = _base_url(f"{prefix}.base_url", values["base_url"])
    if "backup_base_url" in values:
        values["backup_base_url"] = _base_url(
            f"{prefix}.backup_base_url", values["backup_base_url"]
        )
    return _with_defaults(name, vendor, base_url, values, sandbox=False)


def check_otlp_endpoint(key: str, value: str) -> str:
    """An OTLP/gRPC collector's URL, checked (ConfigError naming `key`)."""
    return _base_url(key, value)


def _base_url(key: str, value: str) -> str:
    base_url = value.rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", base_url):
        raise ConfigError(key, "must be http(s)://host[:port] with no path")
    return base_url


def _with_defaults(
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


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str]) -> GatewayConfig:
    """Build a GatewayConfig from parsed TOML, substituting `${NAME}` from `env`."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _TOP_KEYS:
            raise ConfigError(key, "unknown key")
        if key == "callers":
            values["callers"] = _callers_section(value, env)
        elif key == "webhooks":
            continue  # after [callers]: its `callers` must name them
        elif key == "tls":
            values["tls"] = _tls_section(value, env)
        elif key == "allow_unauthenticated":
            if not isinstance(value, bool):
                raise ConfigError(key, f"expected true or false, got {type(value).__name__}")
            values[key] = value
        elif key in _SECTION_KEYS:
            values.update(_section(key, value, env))
        elif key != "backends":
            values[key] = _typed(key, value, _TOP_KEYS[key], env)
    if "listen" in values:
        try:
            split_listen(values["listen"])
        except ValueError as exc:
            raise ConfigError("listen", str(exc)) from None
    raw_backends = raw.get("backends")
    if not isinstance(raw_backends, dict) or not raw_backends:
        raise ConfigError("backends", "at least one [backends.NAME] table is required")
    backends = tuple(_backend(name, body, env) for name, body in raw_backends.items())
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
        values["webhooks"] = _webhooks_section(raw["webhooks"], env, values.get("callers", ()))
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
        _with_defaults(
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
