"""What the Docker image and the repository promise: pinned dependencies, a licence, a
health check that follows the listen address, and a stop timeout longer than the drain."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imgate._config import GatewayConfig

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
