"""A small renderer of Helm charts, for the chart in deploy/helm/imgate where no `helm` exists.

Helm cannot be installed from the registries CI reaches (no Debian package, no wheel; its Go
module needs a newer Go than Debian's), so tests/test_kubernetes.py renders the chart with
this: Go's text/template language as the chart uses it (actions with trim markers,
comments, variables, pipelines, parentheses, if/else if/else, with, range over lists and
maps, define and include) and the Sprig/Helm functions its templates call. Anything else
is an error here, never a guess: a template that uses more must extend this file (and its
test), or the test fails. Where `helm` is on PATH, the test compares the two renderings.

    python -m tests._helm            # rewrite deploy/kubernetes/ from the chart's defaults
    python -m tests._helm --check    # exit 1 when deploy/kubernetes/ is stale
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "imgate"
PLAIN = ROOT / "deploy" / "kubernetes"


class RenderError(Exception):
    """The template is wrong, uses what this renderer does not support, or called fail."""


# ---------------------------------------------------------------------------------- lexing

_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.DOTALL)
_SPACE = " \t\r\n"


def _pieces(text: str) -> list[tuple[str, str]]:
    """[("text", ...) | ("action", ...)] with trim markers applied, comments dropped."""
    pieces: list[tuple[str, str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(text):
        before = text[position : match.start()]
        if trim_next:
            before = before.lstrip(_SPACE)
        if match.group(1):
            before = before.rstrip(_SPACE)
        pieces.append(("text", before))
        body = match.group(2).strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            if "/*" in body:
                raise RenderError(f"a comment must fill its action: {match.group(0)!r}")
            pieces.append(("action", body))
        trim_next = bool(match.group(3))
        position = match.end()
    rest = text[position:]
    pieces.append(("text", rest.lstrip(_SPACE) if trim_next else rest))
    return [piece for piece in pieces if piece != ("text", "")]


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<declare>:=)
    | (?P<punct>[|(),=])
    | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$[A-Za-z0-9_]*|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(body: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    body = body.rstrip()
    while position < len(body):
        match = _TOKEN.match(body, position)
        if not match or match.end() == position:
            raise RenderError(f"cannot read {body[position:]!r} in {{{{ {body} }}}}")
        kind = match.lastgroup
        assert kind
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


# --------------------------------------------------------------------------------- parsing


@dataclass
class _Pipeline:
    declare: list[str]
    commands: list[list[Any]]  # each a list of operands (tuples)


@dataclass
class _Node:
    kind: str  # text, action, if, with, range
    text: str = ""
    pipeline: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


def _parse_pipeline(tokens: list[tuple[str, str]]) -> _Pipeline:
    declare: list[str] = []
    if "declare" in [kind for kind, _ in tokens] or (
        len(tokens) > 1 and tokens[1] == ("punct", "=")
    ):
        split = next(i for i, (kind, v) in enumerate(tokens) if kind == "declare" or v == "=")
        names = [v for kind, v in tokens[:split] if kind == "field"]
        if not names or any(not n.startswith("$") or "." in n for n in names):
            raise RenderError(f"bad declaration in {tokens}")
        declare = names
        tokens = tokens[split + 1 :]
    operands, position = _parse_commands(tokens, 0)
    if position != len(tokens):
        raise RenderError(f"unexpected {tokens[position:]}")
    return _Pipeline(declare, operands)


def _parse_commands(tokens: list[tuple[str, str]], position: int) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while position < len(tokens):
        kind, value = tokens[position]
        if value == ")" and kind == "punct":
            break
        position += 1
        if kind == "punct" and value == "|":
            commands.append([])
        elif kind == "punct" and value == "(":
            inner, position = _parse_commands(tokens, position)
            if position >= len(tokens) or tokens[position] != ("punct", ")"):
                raise RenderError("unclosed (")
            position += 1
            commands[-1].append(("pipe", _Pipeline([], inner)))
        elif kind == "string":
            commands[-1].append(("value", json.loads(value)))
        elif kind == "raw":
            commands[-1].append(("value", value[1:-1]))
        elif kind == "number":
            commands[-1].append(("value", float(value) if "." in value else int(value)))
        elif kind == "field":
            commands[-1].append(("field", value))
        elif kind == "ident":
            constants = {"true": True, "false": False, "nil": None}
            commands[-1].append(
                ("value", constants[value]) if value in constants else ("fn", value)
            )
        else:
            raise RenderError(f"unexpected {value!r}")
    if any(not command for command in commands):
        raise RenderError("empty command in a pipeline")
    return commands, position


def _parse(text: str, defines: dict[str, list[_Node]]) -> list[_Node]:
    """The template's nodes; `define`d templates go into `defines`."""
    root: list[_Node] = []
    stack: list[tuple[str, _Node | None, list[_Node]]] = [("root", None, root)]
    for kind, value in _pieces(text):
        current = stack[-1][2]
        if kind == "text":
            current.append(_Node("text", text=value))
            continue
        tokens = _tokens(value)
        head = tokens[0][1] if tokens[0][0] == "ident" else ""
        if head in ("if", "with", "range"):
            node = _Node(head, pipeline=_parse_pipeline(tokens[1:]))
            current.append(node)
            stack.append((head, node, node.body))
        elif head == "define":
            if len(tokens) != 2 or tokens[1][0] != "string":
                raise RenderError(f"bad define: {value}")
            body: list[_Node] = []
            defines[json.loads(tokens[1][1])] = body
            stack.append(("define", None, body))
        elif head == "else":
            opener, node, _ = stack.pop()
            if node is None or opener not in ("if", "with", "range"):
                raise RenderError("else outside if/with/range")
            if len(tokens) == 1:
                stack.append(("else", node, node.otherwise))
            elif tokens[1] == ("ident", "if") and opener == "if":
                # `else if` is an if inside the else: the chain's one `end` closes it.
                chained = _Node("if", pipeline=_parse_pipeline(tokens[2:]))
                node.otherwise.append(chained)
                stack.append(("if", chained, chained.body))
            else:
                raise RenderError(f"unsupported: {{{{ {value} }}}}")
        elif head == "end":
            if stack.pop()[0] == "root":
                raise RenderError("end without a block")
        elif head in ("template", "block", "break", "continue"):
            raise RenderError(f"unsupported: {{{{ {value} }}}}")
        else:
            current.append(_Node("action", pipeline=_parse_pipeline(tokens)))
    if len(stack) != 1:
        raise RenderError(f"unclosed {stack[-1][0]}")
    return root


# ------------------------------------------------------------------------------ evaluation


def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict):
        return bool(value)
    return True


def _go_number(value: int | float) -> str:
    """How Go's fmt prints a float64 (Helm's numbers): e-notation from 1e21 and below 1e-4;
    large integers it prints as 1.4e+09, which no chart wants: refuse them here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if abs(value) >= 1e6 or (value != int(value)):
        if value == int(value) or not math.isfinite(value):
            raise RenderError(f"Helm prints {value} in e-notation: pipe it through toJson")
        return repr(float(value))
    return str(int(value))


def _printable(value: Any) -> str:
    if value is None:
        return ""  # Helm turns "<no value>" into ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value)
    if isinstance(value, str):
        return value
    raise RenderError(f"would print Go's form of {type(value).__name__}: {value!r}")


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("...").rstrip("\n")


def _go_floats(value: Any) -> Any:
    """Helm's numbers are float64, which Go's JSON writes without ".0" when integral."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {key: _go_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_go_floats(item) for item in value]
    return value


def _to_json(value: Any) -> str:
    text = json.dumps(_go_floats(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


def _printf(form: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        value = next(values)
        if verb in "sv":
            return _printable(value)
        if verb == "d" and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if verb == "q" and isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        raise RenderError(f"printf %{verb} of {value!r}")

    return re.sub(r"%([svdq%])", one, form)


def _fail(message: str) -> str:
    raise RenderError(message)


def _required(message: str, value: Any) -> Any:
    if not _truth(value) and value is not False:
        raise RenderError(message)
    return value


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "toYaml": _to_yaml,
    "toJson": _to_json,
    "nindent": lambda width, text: "\n" + _indent(width, text),
    "indent": _indent,
    "quote": lambda *args: " ".join(json.dumps(_printable(a), ensure_ascii=False) for a in args),
    "default": lambda fallback, *value: value[0] if value and _truth(value[0]) else fallback,
    "printf": _printf,
    "upper": lambda text: text.upper(),
    "lower": lambda text: text.lower(),
    "replace": lambda old, new, text: text.replace(old, new),
    "trunc": lambda width, text: text[:width] if width >= 0 else text[width:],
    "trimSuffix": lambda suffix, text: text.removesuffix(suffix),
    "contains": lambda part, text: part in text,
    "sha256sum": lambda text: hashlib.sha256(text.encode()).hexdigest(),
    "ternary": lambda yes, no, condition: yes if condition else no,
    "fail": _fail,
    "required": _required,
    "not": lambda value: not _truth(value),
    "and": _and,
    "or": _or,
    "eq": lambda a, *others: any(a == other for other in others),
    "ne": lambda a, b: a != b,
    "empty": lambda value: not _truth(value),
}


@dataclass
class _Scope:
    dot: Any
    variables: dict[str, Any]


class _Renderer:
    def __init__(self, defines: dict[str, list[_Node]]) -> None:
        self.defines = defines

    def run(self, nodes: list[_Node], scope: _Scope) -> str:
        out: list[str] = []
        variables = dict(scope.variables)  # a block's declarations end with it
        local = _Scope(scope.dot, variables)
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
            elif node.kind == "action":
                assert node.pipeline
                value = self.pipeline(node.pipeline, local)
                if not node.pipeline.declare:
                    out.append(_printable(value))
            elif node.kind == "if":
                assert node.pipeline
                value = self.pipeline(node.pipeline, local)
                chosen = node.body if _truth(value) else node.otherwise
                out.append(self.run(chosen, local))
            elif node.kind == "with":
                assert node.pipeline
                value = self.pipeline(node.pipeline, local)
                if _truth(value):
                    out.append(self.run(node.body, _Scope(value, variables)))
                else:
                    out.append(self.run(node.otherwise, local))
            elif node.kind == "range":
                out.append(self.range(node, local))
        return "".join(out)

    def range(self, node: _Node, scope: _Scope) -> str:
        assert node.pipeline
        declare = node.pipeline.declare
        value = self.pipeline(_Pipeline([], node.pipeline.commands), scope)
        if isinstance(value, dict):
            items = [(key, value[key]) for key in sorted(value)]
        elif isinstance(value, list):
            items = list(enumerate(value))
        elif value is None:
            items = []
        else:
            raise RenderError(f"range over {type(value).__name__}")
        if not items:
            return self.run(node.otherwise, scope)
        out = []
        for key, item in items:
            variables = dict(scope.variables)
            if len(declare) == 1:
                variables[declare[0]] = item
            elif len(declare) == 2:
                variables[declare[0]], variables[declare[1]] = key, item
            out.append(self.run(node.body, _Scope(item, variables)))
        return "".join(out)

    def pipeline(self, pipeline: _Pipeline, scope: _Scope) -> Any:
        value: Any = None
        for number, command in enumerate(pipeline.commands):
            args = [] if number == 0 else [value]
            value = self.command(command, scope, args)
        for name in pipeline.declare:
            scope.variables[name] = value
        return value

    def command(self, command: list[Any], scope: _Scope, piped: list[Any]) -> Any:
        head = command[0]
        if head[0] == "fn":
            args = [self.operand(op, scope) for op in command[1:]] + piped
            if head[1] == "include":
                name, data = args
                if name not in self.defines:
                    raise RenderError(f"no template {name!r}")
                return self.run(self.defines[name], _Scope(data, {"$": data}))
            if head[1] not in _FUNCTIONS:
                raise RenderError(f"function {head[1]!r} is not supported by tests/_helm.py")
            try:
                return _FUNCTIONS[head[1]](*args)
            except (TypeError, AttributeError) as exc:
                raise RenderError(f"{head[1]}{tuple(args)!r}: {exc}") from None
        if len(command) > 1 or piped:
            raise RenderError(f"cannot call {head!r}")
        return self.operand(head, scope)

    def operand(self, operand: tuple[str, Any], scope: _Scope) -> Any:
        kind, value = operand
        if kind == "value":
            return value
        if kind == "pipe":
            return self.pipeline(value, scope)
        if kind == "fn":
            return self.command([operand], scope, [])
        # a field chain: .A.B, $x.A, $, $x, .
        if value == ".":
            return scope.dot
        parts = value.split(".")
        if parts[0].startswith("$"):
            name = parts[0]
            if name not in scope.variables:
                raise RenderError(f"undefined variable {name}")
            current = scope.variables[name]
        else:
            current = scope.dot
        for part in parts[1:]:
            if current is None:
                raise RenderError(f"nil pointer evaluating {value}")
            if not isinstance(current, Mapping):
                raise RenderError(f"{value}: cannot take .{part} of {type(current).__name__}")
            current = current.get(part)
        return current


# ------------------------------------------------------------------------------ the chart


def merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, a null deletes, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


# Helm's install order (pkg/release/util/kind_sorter.go), the kinds this chart makes.
_ORDER = ["NetworkPolicy", "PodDisruptionBudget", "ConfigMap", "Service", "Deployment"]


@dataclass(frozen=True)
class Manifest:
    source: str  # templates/deployment.yaml
    text: str  # the YAML document as rendered

    @property
    def object(self) -> dict[str, Any]:
        loaded = yaml.safe_load(self.text)
        assert isinstance(loaded, dict), self.text
        return loaded

    @property
    def kind(self) -> str:
        return str(self.object["kind"])


def render(
    values: Mapping[str, Any] | None = None,
    release: str = "imgate",
    namespace: str = "default",
    chart: Path = CHART,
) -> list[Manifest]:
    """The chart's manifests with `values` over its values.yaml, in Helm's install order."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    merged = merge(yaml.safe_load((chart / "values.yaml").read_text()), dict(values or {}))
    templates = sorted((chart / "templates").iterdir())
    defines: dict[str, list[_Node]] = {}
    parsed: dict[str, list[_Node]] = {}
    for path in templates:
        nodes = _parse(path.read_text(), defines)
        if not path.name.startswith("_") and path.suffix in (".yaml", ".yml"):
            parsed[f"templates/{path.name}"] = nodes
    manifests: list[Manifest] = []
    for source, nodes in parsed.items():
        root = {
            "Values": merged,
            "Release": {
                "Name": release,
                "Namespace": namespace,
                "Service": "Helm",
                "IsInstall": True,
                "IsUpgrade": False,
            },
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta.get("appVersion", ""),
            },
            "Template": {
                "Name": f"{meta['name']}/{source}",
                "BasePath": f"{meta['name']}/templates",
            },
        }
        text = _Renderer(defines).run(nodes, _Scope(root, {"$": root}))
        for document in re.split(r"^---\s*$", text, flags=re.MULTILINE):
            if document.strip() and yaml.safe_load(document) is not None:
                manifests.append(Manifest(source, document.strip("\n") + "\n"))

    def rank(manifest: Manifest) -> int:
        kind = manifest.kind
        return _ORDER.index(kind) if kind in _ORDER else len(_ORDER)

    return sorted(manifests, key=rank)


# ------------------------------------------------------------- deploy/kubernetes/, rendered

# Each plain manifest file: the values it is rendered with, and the kinds it keeps.
PLAIN_FILES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "imgate.yaml": ({}, ("PodDisruptionBudget", "ConfigMap", "Service", "Deployment")),
    "servicemonitor.yaml": ({"serviceMonitor": {"enabled": True}}, ("ServiceMonitor",)),
    "networkpolicy.yaml": ({"networkPolicy": {"enabled": True}}, ("NetworkPolicy",)),
}


def plain_file(name: str) -> str:
    """The text deploy/kubernetes/NAME should hold."""
    values, kinds = PLAIN_FILES[name]
    header = (
        "# deploy/helm/imgate rendered (release name imgate) with its default values"
        + (f",\n# and {_to_json(values)}" if values else "")
        + ".\n"
        "# Do not edit: change the chart, then run `python -m tests._helm`\n"
        "# (tests/test_kubernetes.py fails while this file and the chart disagree).\n"
        "# How to use it: docs/kubernetes.md.\n"
    )
    documents = [m for m in render(values) if m.kind in kinds]
    return header + "".join(f"---\n# Source: imgate/{m.source}\n{m.text}" for m in documents)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    PLAIN.mkdir(exist_ok=True)
    for name in PLAIN_FILES:
        path = PLAIN / name
        wanted = plain_file(name)
        if path.exists() and path.read_text() == wanted:
            continue
        stale.append(name)
        if not check:
            path.write_text(wanted)
    if stale:
        print(("stale: " if check else "wrote: ") + ", ".join(stale))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
