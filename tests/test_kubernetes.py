"""deploy/helm/imgate and deploy/kubernetes/ (CONTRACT §11 rule 34), checked offline.

No cluster and no `helm` here: the chart is rendered by tests/_helm.py (a Go-template subset
that refuses what it does not know) with the values below, and every rendered object passes
the Kubernetes OpenAPI schemas in strict mode (kubernetes-validate, for the oldest version
the chart supports and the newest it knows); the ServiceMonitor, whose CRD those schemas
lack, passes a schema of its shape written here. The objects must fit together (selectors,
port names, probes on the health service), take secrets only from Secrets, and carry a
config that the gateway's own loader accepts. deploy/kubernetes/ must be the chart rendered
with its defaults. Where `helm` is on PATH, its rendering must equal this one.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from imgate.config.errors import ConfigError
from imgate.config.load import parse_config
from imgate.config.model import GatewayConfig
from tests import _helm
from tests._certs import TestCA

ROOT = Path(__file__).resolve().parent.parent

# The chart's kubeVersion floor (gRPC probes are GA from 1.27) and the newest schemas known.
K8S_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]

# Values the tests render with: the defaults, and each optional part switched on.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tls": {"tls": {"enabled": True, "clientCA": True}},
    "health-listener-without-tls": {"health": {"separateListener": True, "port": 50070}},
    "http": {"http": {"enabled": True}},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example/imgate", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "registry"}],
        "tls": {"enabled": True},
        "http": {"enabled": True, "console": False},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {
            "enabled": True,
            "clients": [{"namespaceSelector": {"matchLabels": {"team": "billing"}}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
        "callers": {
            "app": None,  # null removes the default caller
            "billing": {
                "tokenSha256Secret": {"name": "callers", "key": "billing"},
                "backends": ["tx", "yx"],
                "weight": 3,
            },
            "ops.team-2": {"tokenSha256Secret": {"name": "callers", "key": "ops"}},
        },
        "defaultBackend": "yx",
        "backends": {
            "yx": {
                "vendor": "yunxin_v1",
                "base_url": "https://api.yunxinapi.com",
                "app_key": "my-app-key",
                "app_secret": "${YUNXIN_APP_SECRET}",
                "recipients_per_call": 100,
                "call_window_s": 60.5,
            },
        },
        "secretEnv": [
            {"name": "TENCENT_SECRET_KEY", "secretKeyRef": {"name": "imgate", "key": "tx"}},
            {"name": "YUNXIN_APP_SECRET", "secretKeyRef": {"name": "imgate", "key": "yx"}},
        ],
        "extraToml": '[tracing]\notlp_endpoint = "http://otel-collector:4317"\n',
        "podAnnotations": {"example.com/team": "im"},
        "podLabels": {"tier": "backend"},
        "service": {"annotations": {"example.com/lb": "internal"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "im"}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "imgate"}},
            }
        ],
        "podDisruptionBudget": {"minAvailable": "50%"},
    },
    "unauthenticated": {"callers": None, "allowUnauthenticated": True},
    "no-pdb": {"podDisruptionBudget": {"enabled": False}},
}


def _documented_values() -> dict[str, Any]:
    """The example values of docs/kubernetes.md (its only yaml block)."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


VALUE_SETS["docs/kubernetes.md"] = _documented_values()


def _render(name: str, release: str = "imgate") -> dict[str, dict[str, Any]]:
    """The objects of value set `name`, by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for manifest in _helm.render(VALUE_SETS[name], release=release):
        assert manifest.kind not in objects, f"two {manifest.kind}s"
        objects[manifest.kind] = manifest.object
    return objects


def _container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


# The Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1), the part the chart
# writes: its CRD is not among the core schemas. Field names and the duration pattern are
# the CRD's; unknown fields are refused as in strict mode.
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
    "additionalProperties": False,
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {
                                "type": "string",
                                "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
                                r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
                            },
                            "scrapeTimeout": {"type": "string"},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def _validate(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_passes_the_kubernetes_schemas(name: str, version: str) -> None:
    objects = _render(name)
    assert {"ConfigMap", "Service", "Deployment"} <= set(objects)
    for obj in objects.values():
        _validate(obj, version)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_plain_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    kinds = []
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj is not None:
                _validate(obj, version)
                kinds.append(obj["kind"])
    assert sorted(kinds) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "ServiceMonitor",
        ]
    )


def test_the_validation_catches_mistakes() -> None:
    """The checks above can fail: a probe on a named port (gRPC probes take numbers only),
    an unknown field, a ServiceMonitor interval in the wrong form."""
    objects = _render("defaults")
    deployment = objects["Deployment"]
    _container(objects)["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment, K8S_VERSIONS[0])
    service = objects["Service"]
    service["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(service, K8S_VERSIONS[0])
    monitor = _render("everything")["ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor, K8S_VERSIONS[0])


@pytest.mark.parametrize("name", sorted(_helm.PLAIN_FILES))
def test_the_plain_manifests_are_the_chart_rendered(name: str) -> None:
    path = ROOT / "deploy" / "kubernetes" / name
    assert path.read_text() == _helm.plain_file(name), (
        f"{path.relative_to(ROOT)} is stale: run `python -m tests._helm`"
    )


def _secret_env(container: dict[str, Any]) -> dict[str, str]:
    """A stand-in value for every variable the pod takes from a Secret."""
    values = {}
    for variable in container["env"]:
        if "valueFrom" not in variable:
            continue
        name = variable["name"]
        assert set(variable["valueFrom"]) == {"secretKeyRef"}, name
        if name == "IMGATE_STORE_URL":
            values[name] = "postgresql://imgate:secret@postgres:5432/imgate"
        elif name == "IMGATE_QUOTA_URL":
            values[name] = "redis://:secret@redis:6379/0"
        elif name.endswith("_TOKEN_SHA256"):
            values[name] = hashlib.sha256(name.encode()).hexdigest()
        else:
            values[name] = "secret"
    return values


def _load(objects: dict[str, dict[str, Any]], tmp_path: Path) -> tuple[GatewayConfig, set[str]]:
    """The ConfigMap's imgate.toml through the gateway's loader, with the pod's environment.
    Returns the config and the tables this tree's loader does not know yet ([health] and
    [http] land with issue 25's other items), which are checked by the other tests."""
    container = _container(objects)
    text = objects["ConfigMap"]["data"]["imgate.toml"]
    # The mounted Secret, here: a real certificate, key and CA (the loader checks PEM).
    ca = TestCA(tmp_path, "chart")
    server = ca.issue("imgate", server=True)
    files = {"tls.crt": server.cert_file, "tls.key": server.key_file, "ca.crt": ca.ca_file}
    for name, file in files.items():
        text = text.replace(f"/etc/imgate/tls/{name}", str(file))
    env = {v["name"]: v["value"] for v in container["env"] if "value" in v}
    env.update(_secret_env(container))
    raw = tomllib.loads(text)
    pending: set[str] = set()
    while True:
        try:
            return parse_config(raw, env), pending
        except ConfigError as exc:
            if exc.key not in ("health", "http") or exc.key not in raw:
                raise
            pending.add(exc.key)
            del raw[exc.key]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_config_map_is_a_config_the_gateway_loads(name: str, tmp_path: Path) -> None:
    objects = _render(name)
    config, _ = _load(objects, tmp_path)
    assert config.store_url.startswith("postgresql://")
    assert config.quota_url.startswith("redis://")
    assert config.metrics_listen == "0.0.0.0:9464"
    assert bool(config.callers) != config.allow_unauthenticated
    assert (config.tls is not None) == bool(VALUE_SETS[name].get("tls"))
    assert (
        config.shutdown_grace_s
        < objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    ), "the drain must finish before the kubelet's SIGKILL"
    if name == "everything":
        caller = next(c for c in config.callers if c.name == "billing")
        assert caller.backends == ("tx", "yx")
        assert caller.weight == 3
        assert {c.name for c in config.callers} == {"billing", "ops.team-2"}
        assert config.default_backend == "yx"
        assert config.tracing_otlp_endpoint == "http://otel-collector:4317"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_secrets_come_only_from_secrets(name: str) -> None:
    objects = _render(name)
    assert "Secret" not in objects  # the chart references Secrets you create, never makes one
    container = _container(objects)
    from_secrets = {v["name"] for v in container["env"] if "valueFrom" in v}
    text = objects["ConfigMap"]["data"]["imgate.toml"]
    references = set(re.findall(r"\$\{(\w+)\}", text))
    assert references <= from_secrets, "a ${NAME} of the config that no Secret gives"
    raw = tomllib.loads(text)
    assert raw["store"]["url"] == "${IMGATE_STORE_URL}"
    assert raw["quota"]["url"] == "${IMGATE_QUOTA_URL}"
    for caller in raw.get("callers", {}).values():
        assert re.fullmatch(r"\$\{IMGATE_CALLER_\w+_TOKEN_SHA256\}", caller["token_sha256"])
    assert not re.search(r"(postgres(ql)?|rediss?)://", text)
    for variable in container["env"]:
        if "value" in variable:
            assert variable["name"] in {"IMGATE_LISTEN", "IMGATE_STATE_DIR"}, variable
    volumes = objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
    if VALUE_SETS[name].get("tls"):
        (tls,) = (v for v in volumes if v["name"] == "tls")
        assert tls["secret"]["secretName"] == "imgate-tls"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_probes_ask_the_health_service_on_a_port_without_tls(name: str, tmp_path: Path) -> None:
    """Kubernetes gRPC probes speak plaintext only: with TLS on they ask the health-only
    listener ([health] listen), else the gRPC port. Readiness and liveness (and startup)
    ask grpc.health.v1 for the overall service."""
    objects = _render(name)
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    raw = tomllib.loads(objects["ConfigMap"]["data"]["imgate.toml"])
    values = _helm.merge(
        yaml.safe_load((_helm.CHART / "values.yaml").read_text()), VALUE_SETS[name]
    )
    separate = values["tls"]["enabled"] or values["health"]["separateListener"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        spec = container[probe]
        assert set(spec) - {
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "initialDelaySeconds",
            "successThreshold",
        } == {"grpc"}
        assert spec["grpc"].get("service", "") == ""  # the overall service
        if separate:
            assert spec["grpc"]["port"] == ports["health"] == values["health"]["port"]
        else:
            assert spec["grpc"]["port"] == ports["grpc"]
    if separate:
        assert raw["health"] == {"listen": f"0.0.0.0:{values['health']['port']}"}
        assert "tls" in raw or not values["tls"]["enabled"]
    else:
        assert "health" not in raw
        assert "health" not in ports
    _, pending = _load(objects, tmp_path)
    assert pending <= {"health", "http"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_ports_selectors_and_names_fit_together(name: str) -> None:
    objects = _render(name)
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    raw = tomllib.loads(objects["ConfigMap"]["data"]["imgate.toml"])
    assert raw["listen"].endswith(f":{ports['grpc']}")
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["IMGATE_LISTEN"] == raw["listen"]  # the image's variable wins over the file
    assert raw["metrics"]["listen"].endswith(f":{ports['metrics']}")
    if "http" in raw:
        assert raw["http"]["listen"].endswith(f":{ports['http']}")
    service = objects["Service"]
    expected = {"grpc": 50051, "metrics": 9464} | ({"http": 8080} if "http" in raw else {})
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == expected
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    pod = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod.items()
    assert service["spec"]["selector"] == selector
    if "PodDisruptionBudget" in objects:
        assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    if "ServiceMonitor" in objects:
        monitor = objects["ServiceMonitor"]["spec"]
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    if "NetworkPolicy" in objects:
        policy = objects["NetworkPolicy"]["spec"]
        assert policy["podSelector"]["matchLabels"] == selector
        named = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
        assert named == set(ports), "every container port has its rule, and no other"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert set(mounts) == volumes


def test_the_pod_runs_as_the_image_user_on_a_read_only_root() -> None:
    objects = _render("defaults")
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)$", dockerfile, flags=re.MULTILINE)
    state_dir = re.search(r"^ENV IMGATE_STATE_DIR=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert user
    assert state_dir
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["automountServiceAccountToken"] is False
    container = _container(objects)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert mounts[state_dir.group(1)] in empty_dirs
    assert mounts["/tmp"] in empty_dirs
    assert {"name": "IMGATE_STATE_DIR", "value": state_dir.group(1)} in container["env"]
    assert objects["Deployment"]["spec"]["replicas"] == 2
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    exposed = re.search(r"^EXPOSE (.*)$", dockerfile, flags=re.MULTILINE)
    assert exposed
    ports = {p["containerPort"] for p in _container(_render("everything"))["ports"]}
    assert ports <= {int(p) for p in exposed.group(1).split()}


def test_a_release_of_another_name_names_its_objects_after_it() -> None:
    objects = _render("defaults", release="prod")
    assert {obj["metadata"]["name"] for obj in objects.values()} == {"prod-imgate"}
    assert objects["Deployment"]["spec"]["template"]["spec"]["volumes"][0]["configMap"] == {
        "name": "prod-imgate"
    }
    assert {obj["metadata"]["name"] for obj in _render("defaults").values()} == {"imgate"}


def test_a_new_config_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        (deployment,) = (m.object for m in _helm.render(values) if m.kind == "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({"replicaCount": 5})
    assert checksum({}) != checksum({"log": {"level": "debug"}})


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"store": {"urlSecret": {"name": ""}}}, "store.urlSecret"),
        ({"quota": {"urlSecret": None}}, "quota.urlSecret"),
        ({"callers": None}, "callers"),
    ],
)
def test_what_the_replicas_need_is_required(values: dict[str, Any], named: str) -> None:
    with pytest.raises(_helm.RenderError, match=re.escape(named)):
        _helm.render(values)


def test_the_chart_metadata() -> None:
    chart = yaml.safe_load((_helm.CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == _helm.CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# ------------------------------------------------------------------- the renderer itself


def _render_template(tmp_path: Path, template: str, values: dict[str, Any]) -> str:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: t\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    (chart / "templates" / "_helpers.tpl").write_text(
        '{{- define "t.name" -}}{{ $.Values.name }}-{{ .Values.name | upper }}{{- end -}}'
    )
    (chart / "templates" / "t.yaml").write_text(template)
    (manifest,) = _helm.render(chart=chart)
    return manifest.text


def test_the_renderer_follows_go_templates(tmp_path: Path) -> None:
    template = """\
kind: T
a: {{ include "t.name" . }}
{{- if eq .Values.n 1 }}
b: one
{{- else if eq .Values.n 2 }}
b: two
{{- else }}
b: many
{{- end }}
c: {{ .Values.missing | default "fallback" | quote }}
{{- range $key, $value := .Values.map }}
{{ $key }}: {{ $value }}
{{- end }}
{{- with .Values.list }}
list:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- /* a comment */}}
d: {{ printf "%s-%d" "x" 7 }}
"""
    values = {"name": "n", "n": 2, "map": {"z": 1, "y": True}, "list": ["p", "q"]}
    assert _render_template(tmp_path, template, values) == (
        'kind: T\na: n-N\nb: two\nc: "fallback"\ny: true\nz: 1\nlist:\n  - p\n  - q\nd: x-7\n'
    )


@pytest.mark.parametrize(
    "template",
    [
        "kind: {{ .Values.x | nosuchfunction }}",
        'kind: {{ template "t.name" . }}',
        "a: {{ .Values.big }}",
    ],
)
def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path, template: str) -> None:
    with pytest.raises(_helm.RenderError):
        _render_template(tmp_path, template, {"x": 1, "big": 1400000000})


@pytest.mark.skipif(
    shutil.which("helm") is None, reason="helm is not installed (no registry here has it)"
)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_renders_what_the_renderer_renders(name: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[name]))
    helm = subprocess.run(
        ["helm", "template", "imgate", str(_helm.CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(helm) if d), key=lambda d: str(d["kind"]))
    ours = sorted((m.object for m in _helm.render(VALUE_SETS[name])), key=lambda d: str(d["kind"]))
    assert theirs == ours
