"""What the Docker image and the repository promise: pinned dependencies, a licence, a
health check that follows the listen address, and a stop timeout longer than the drain."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imgate.config.load import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def _runtime_closure() -> set[str]:
    """imgate's run-time dependencies, transitively, as installed here (no extras)."""
    seen: set[str] = set()
    todo = ["imgate"]
    while todo:
        for raw in metadata.distribution(todo.pop()).requires or []:
            requirement = Requirement(raw)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in seen:
                seen.add(name)
                todo.append(requirement.name)
    return seen


def test_constraints_pin_every_runtime_dependency_within_pyproject() -> None:
    pins = _pins()
    assert set(pins) == _runtime_closure()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        requirement = Requirement(raw)
        version = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (raw, version)


def test_the_image_installs_with_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md LICENSE constraints.txt" in dockerfile
    assert re.search(r"pip install --constraint constraints\.txt \.", dockerfile)


def test_the_health_check_follows_the_listen_address_and_stays_light() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    check = re.search(r"HEALTHCHECK (?P<options>[^\n]*)\\\n\s*CMD (?P<cmd>[^\n]*)", dockerfile)
    assert check, "no HEALTHCHECK"
    assert check.group("cmd") == '["imgate", "health"]'  # no fixed address: IMGATE_LISTEN
    assert "IMGATE_LISTEN=0.0.0.0:50051" in dockerfile
    interval = re.search(r"--interval=(\d+)s", check.group("options"))
    assert interval
    assert int(interval.group(1)) >= 30


def test_stopping_gives_the_drain_time() -> None:
    grace = GatewayConfig.__dataclass_fields__["shutdown_grace_s"].default
    assert isinstance(grace, float)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in dockerfile
    compose = (ROOT / "examples" / "docker" / "compose.yaml").read_text()
    period = re.search(r"stop_grace_period: (\d+)s", compose)
    assert period
    assert int(period.group(1)) > grace
    docs = (ROOT / "docs" / "docker.md").read_text()
    timeout = re.search(r"--stop-timeout (\d+)", docs)
    assert timeout
    assert int(timeout.group(1)) > grace
    assert "sandbox --listen 0.0.0.0:8080" in docs  # the emulators run from the image


def test_the_licence_is_the_one_the_metadata_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    licence = " ".join((ROOT / "LICENSE").read_text().split())
    assert licence.startswith("Apache License Version 2.0, January 2004")


def test_no_document_links_outside_the_repository() -> None:
    for document in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)]+)\)", document.read_text()):
            if "://" in target:
                continue
            resolved = (document.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), (document.name, target)
            assert resolved.exists(), (document.name, target)


def test_the_replicas_compose_file_and_its_config_fit_together() -> None:
    """deploy/compose.yaml (never run here: no Docker engine) against what it relies on:
    its config loads, with secrets from the environment only, and three replicas share one
    PostgreSQL store and one Redis behind one address."""
    from imgate.config.load import load_config

    deploy = ROOT / "deploy"
    compose = (deploy / "compose.yaml").read_text()
    env = {
        name: "x"
        for name in re.findall(r"^    (IMGATE_\w+):", compose, flags=re.MULTILINE)
        if name != "IMGATE_DEMO_TOKEN_SHA256"
    }
    env["IMGATE_DEMO_TOKEN_SHA256"] = "0" * 64
    env["IMGATE_STORE_URL"] = "postgresql://imgate:pw@postgres:5432/imgate"
    env["IMGATE_QUOTA_URL"] = "redis://redis:6379/0"
    config = load_config(deploy / "replicas" / "imgate.toml", env)
    assert config.store_url.startswith("postgresql://")
    assert config.quota_url.startswith("redis://")
    assert config.callers  # served beyond loopback: callers with tokens (rule 18)
    raw = (deploy / "replicas" / "imgate.toml").read_text()
    assert "${IMGATE_STORE_URL}" in raw
    assert "password" not in raw.lower()
    replicas = re.findall(r"^  (imgate-\d): \*imgate$", compose, flags=re.MULTILINE)
    assert replicas == ["imgate-1", "imgate-2", "imgate-3"]
    nginx = (deploy / "replicas" / "nginx.conf").read_text()
    assert re.findall(r"server (imgate-\d):50051", nginx) == replicas
    for service in ("postgres:", "redis:", "vendor:"):
        assert f"\n  {service}" in compose
    period = re.search(r"stop_grace_period: (\d+)s", compose)
    assert period
    assert int(period.group(1)) > config.shutdown_grace_s
