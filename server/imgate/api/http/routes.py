"""The HTTP routes of a gRPC service, read from its RPCs' `google.api.http` options.

Nothing here names an RPC: every annotated RPC is a route, so an RPC added to the proto
with an option is served over HTTP (and described in openapi.json) with no code here.
Path templates may hold literal segments, `{field}` variables (one path segment each,
bound to a request field, dotted for a nested one) and a trailing `:verb` (AIP-136 custom
methods); anything else of the template grammar is refused when the routes are read, so
an unsupported option fails at start-up, not at the first request.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

_VERBS = ("get", "put", "post", "delete", "patch")
_LITERAL = re.compile(r"^[A-Za-z0-9._~-]+$")
_VARIABLE = re.compile(r"^\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}$")


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of an RPC."""

    rpc: MethodDescriptor
    method: str
    """HTTP method, upper case."""
    template: str
    """The option's path template, e.g. "/v1/batches/{batch_id}:cancel"."""
    body: str
    """"" (no body: fields come from the query), "*" (the body is the request) or a
    field name (the body is that field; for a client stream: a repeated string field whose
    values are the body's lines)."""
    variables: tuple[str, ...]
    """Field paths bound by the template's variables, in order."""
    pattern: re.Pattern[str]

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables' values when `raw_path` (still percent-encoded) is this route's."""
        found = self.pattern.match(raw_path)
        if found is None:
            return None
        return {
            field: urllib.parse.unquote(value, errors="strict")
            for field, value in zip(self.variables, found.groups(), strict=True)
        }


def http_rules(rpc: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The rpc's google.api.http option and its additional bindings (none: not served)."""
    options = rpc.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def service_routes(service: ServiceDescriptor) -> tuple[Route, ...]:
    """Every binding of every RPC of `service`. Raises ValueError for an option this
    module cannot serve."""
    return tuple(_route(rpc, rule) for rpc in service.methods for rule in http_rules(rpc))


def _route(rpc: MethodDescriptor, rule: http_pb2.HttpRule) -> Route:
    kind = rule.WhichOneof("pattern")
    if kind not in _VERBS:
        raise ValueError(f"{rpc.full_name}: unsupported google.api.http pattern {kind!r}")
    template: str = getattr(rule, kind)
    pattern, variables = compile_template(template)
    for field_path in variables:
        field = field_of(rpc.input_type, field_path)
        if field is None or field.type == FieldDescriptor.TYPE_MESSAGE or _repeated(field):
            raise ValueError(f"{rpc.full_name}: {template}: {field_path} is no scalar field")
    body = rule.body
    if body and body != "*" and rpc.input_type.fields_by_name.get(body) is None:
        raise ValueError(f"{rpc.full_name}: body {body!r} is no field of the request")
    if rpc.client_streaming:
        field = rpc.input_type.fields_by_name.get(body)
        if field is None or not _repeated(field) or field.type != FieldDescriptor.TYPE_STRING:
            raise ValueError(
                f"{rpc.full_name}: a client stream is served with its body bound to a"
                " repeated string field (one value per line)"
            )
    if rpc.client_streaming and rpc.server_streaming:
        raise ValueError(f"{rpc.full_name}: bidirectional streams are not served over HTTP")
    return Route(rpc, kind.upper(), template, body, variables, pattern)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """The regular expression of a path template, matched against the raw (encoded)
    path, and its variables' field paths."""
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with /")
    path, colon, verb = template.rpartition(":") if ":" in template else (template, "", "")
    if colon and not _LITERAL.match(verb):
        raise ValueError(f"path template {template!r}: bad verb {verb!r}")
    parts: list[str] = []
    variables: list[str] = []
    for segment in path[1:].split("/"):
        variable = _VARIABLE.match(segment)
        if variable is not None:
            variables.append(variable.group(1))
            parts.append("([^/:]+)")
        elif _LITERAL.match(segment):
            parts.append(re.escape(segment))
        else:
            raise ValueError(f"path template {template!r}: unsupported segment {segment!r}")
    expression = "/" + "/".join(parts) + (re.escape(":" + verb) if colon else "")
    return re.compile(f"^{expression}$"), tuple(variables)


def field_of(message: Descriptor | Any, field_path: str) -> FieldDescriptor | None:
    """The field a dotted path names in a message descriptor, by proto or JSON name."""
    field = None
    for name in field_path.split("."):
        if message is None:
            return None
        field = message.fields_by_name.get(name) or message.fields_by_camelcase_name.get(name)
        if field is None:
            return None
        message = field.message_type
    return field


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
