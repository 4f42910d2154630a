"""Who may reach the gateway: [callers.NAME] tables, the [tls] table and its files, and
rule 18's check that no unauthenticated listener is exposed beyond loopback."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.config.model import CallerConfig, GatewayConfig, TLSConfig
from imgate.config.pem import pem_problem
from imgate.config.values import typed_value

# [callers.NAME] and [tls] keys -> their types (what tests/test_config_docs.py checks).
CALLER_KEYS: dict[str, type] = {"token_sha256": str, "backends": list, "weight": int}
TLS_KEYS: dict[str, type] = {"cert_file": str, "key_file": str, "client_ca_file": str}
_CALLER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def parse_callers(raw: Any, env: Mapping[str, str]) -> tuple[CallerConfig, ...]:
    """The [callers] table: one CallerConfig per [callers.NAME], tokens by digest only."""
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
            if key not in CALLER_KEYS:
                raise ConfigError(f"{prefix}.{key}", "unknown key")
        if "token_sha256" not in body:
            raise ConfigError(f"{prefix}.token_sha256", "missing (imgate token hash)")
        digest_hex = typed_value(f"{prefix}.token_sha256", body["token_sha256"], str, env)
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
        weight = typed_value(f"{prefix}.weight", body.get("weight", 1), int, env, maximum=1000)
        callers.append(CallerConfig(name, digest, backends, weight))
    return tuple(callers)


def parse_tls(raw: Any, env: Mapping[str, str]) -> TLSConfig:
    """The [tls] table, its files read and checked now so that start-up names a bad one."""
    if not isinstance(raw, dict):
        raise ConfigError("tls", "must be a table")
    values: dict[str, str] = {}
    for key, value in raw.items():
        if key not in TLS_KEYS:
            raise ConfigError(f"tls.{key}", "unknown key")
        values[key] = typed_value(f"tls.{key}", value, str, env)
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
