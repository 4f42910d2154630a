"""What the Docker image and the repository promise: pinned dependencies, a licence, a
health check that follows the listen address, and a stop timeout longer than the drain."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from imgate.config.model import GatewayConfig

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
    replicas = re.findall(r"^  (imgate-\d):\n    <<: \*imgate$", compose, flags=re.MULTILINE)
    assert replicas == ["imgate-1", "imgate-2", "imgate-3"]
    nginx = (deploy / "replicas" / "nginx.conf").read_text()
    assert re.findall(r"server (imgate-\d):50051", nginx) == replicas
    for service in ("postgres:", "redis:", "vendor:"):
        assert f"\n  {service}" in compose
    period = re.search(r"stop_grace_period: (\d+)s", compose)
    assert period
    assert int(period.group(1)) > config.shutdown_grace_s


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_compose_file_ships_prometheus_and_grafana_with_the_dashboard() -> None:
    """Prometheus scrapes every replica's [metrics] listen and loads the shipped alerts;
    Grafana provisions it as its data source and loads the shipped dashboard; each
    replica's metrics port is published; every file the compose file mounts exists."""
    from imgate.config.load import load_config

    deploy = ROOT / "deploy"
    services = _compose()["services"]
    env = {
        "IMGATE_STORE_URL": "postgresql://imgate:pw@postgres:5432/imgate",
        "IMGATE_QUOTA_URL": "redis://redis:6379/0",
        "IMGATE_DEMO_TOKEN_SHA256": "0" * 64,
    }
    config = load_config(deploy / "replicas" / "imgate.toml", env)
    metrics_port = config.metrics_listen.rpartition(":")[2]
    replicas = sorted(name for name in services if name.startswith("imgate-"))
    published = []
    for name in replicas:
        service = services[name]
        assert service["command"] == ["serve", "--config", "/etc/imgate/imgate.toml"]
        assert "IMGATE_STORE_URL" in service["environment"]  # the anchor's keys, merged in
        (port,) = service["ports"]
        host, _, container = port.rpartition(":")
        assert container == metrics_port
        assert host.startswith("127.0.0.1:")
        published.append(host)
    assert len(set(published)) == len(replicas)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (deploy / source).exists(), source

    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    scrape = yaml.safe_load((deploy / "prometheus" / "prometheus.yml").read_text())
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert scrape["rule_files"] == [mounts["./prometheus/imgate-alerts.yml"]]
    (job,) = scrape["scrape_configs"]
    (targets,) = job["static_configs"]
    assert targets["targets"] == [f"{name}:{metrics_port}" for name in replicas]

    grafana = services["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    provisioning = deploy / "grafana" / "provisioning"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "imgate.yaml").read_text())[
        "providers"
    ]
    dashboard = mounts["./grafana/imgate.json"]
    assert Path(dashboard).parent == Path(provider["options"]["path"])
    assert json.loads((deploy / "grafana" / "imgate.json").read_text())["uid"]

    exposed = re.search(r"^EXPOSE (.*)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert exposed
    assert metrics_port in exposed.group(1).split()


# Where the demo caller's token is made: each keeps the token (IMGATE_TOKEN) and derives
# the hash the gateway is given from it.
_TOKEN_DOCUMENTS = ["deploy/compose.yaml", "docs/docker.md", "docs/kubernetes.md"]


@pytest.mark.parametrize("document", _TOKEN_DOCUMENTS)
def test_the_documented_token_step_keeps_a_working_token(document: str) -> None:
    """The documents' own commands, run with the real `imgate token new` and `imgate token
    hash`: the token they keep in IMGATE_TOKEN is one the configured hash accepts."""
    from imgate.api.callers import CallerInterceptor, RefusalLog
    from imgate.config.load import load_config

    text = (ROOT / document).read_text()
    assert "s/^token_sha256: //p" not in text  # the old step, which threw the token away
    lines = [re.sub(r"^#\s*", "", line).strip() for line in text.splitlines()]
    (keep,) = [line for line in lines if line.startswith("export IMGATE_TOKEN=")]
    hashes = re.findall(r'\$\(printf %s "\$IMGATE_TOKEN" \| imgate token hash\)', text)
    assert hashes, "no step derives the hash from the kept token"
    script = "set -euo pipefail\n" + keep + '\nprintf "%s\\n" "$IMGATE_TOKEN"\n'
    script += "".join(f'printf "%s\\n" "{h}"\n' for h in set(hashes))
    exported = [line for line in lines if line.startswith("export IMGATE_DEMO_TOKEN_SHA256=")]
    script += "".join(f'{line}\nprintf "%s\\n" "$IMGATE_DEMO_TOKEN_SHA256"\n' for line in exported)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
        timeout=60,
        check=True,
    )
    token, *digests = result.stdout.splitlines()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", token), "no token kept"
    assert digests
    assert set(digests) == {hashlib.sha256(token.encode()).hexdigest()}
    if document == "deploy/compose.yaml":
        env = {
            "IMGATE_STORE_URL": "postgresql://imgate:pw@postgres:5432/imgate",
            "IMGATE_QUOTA_URL": "redis://redis:6379/0",
            "IMGATE_DEMO_TOKEN_SHA256": digests[0],
        }
        config = load_config(ROOT / "deploy" / "replicas" / "imgate.toml", env)
        interceptor = CallerInterceptor(config.callers, RefusalLog())
        caller = interceptor.identify([("authorization", f"Bearer {token}")])
        assert caller is not None
        assert caller.name == "demo"
