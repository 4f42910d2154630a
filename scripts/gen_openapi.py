"""Write the OpenAPI 3.1 document of the HTTP/JSON API from the proto (the one way to do it).

    python scripts/gen_openapi.py          # write server/imgate/api/http/openapi.json
    python scripts/gen_openapi.py --check  # exit 1 when the committed document is stale

protoc (grpc_tools, pinned in the dev extra) compiles protos/ with its comments into a
descriptor set; the document is built from that alone: a path per google.api.http binding
(the same bindings the gateway serves, read by imgate.api.http.routes), a schema per
message and enum in protobuf's JSON mapping (lowerCamelCase names, 64-bit integers as
strings, Timestamp as RFC 3339 text), every description from the proto's comments, and
google.rpc.Status (from googleapis-common-protos) as the error body. The gateway serves
the file at GET /v1/openapi.json; tests/http/test_openapi.py validates it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc_tools
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from imgate.api.http.routes import compile_template

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT = ROOT / "server" / "imgate" / "api" / "http" / "openapi.json"
API_FILE = "imgate/v1/gateway.proto"
ERROR_FILES = ("google/rpc/status.proto", "google/rpc/error_details.proto")
STATUS = "google.rpc.Status"

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT64: {"type": "string", "format": "int64"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
# Well-known types whose JSON form is not an object of their fields.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Any": {
        "type": "object",
        "description": "A message of the type its @type names, in protobuf JSON.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_STREAM_NOTE = (
    " Streams: one response message per line (application/x-ndjson), or Server-Sent Events"
    " when the request accepts text/event-stream (each message one event whose id is its"
    " cursor; Last-Event-ID resumes after it; `event: end` closes the stream). An error"
    ' after the stream started is its last line, {"error": google.rpc.Status}, or an'
    " `event: error`."
)
_INFO = (
    "imgate's GatewayService as HTTP/JSON (protobuf's canonical JSON mapping), served by"
    " the gateway itself on `[http] listen`: the same operations, callers, limits and"
    " errors as gRPC. Errors answer the gRPC code's HTTP status (400 INVALID_ARGUMENT,"
    " 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ABORTED or"
    " ALREADY_EXISTS, 412 FAILED_PRECONDITION, 429 RESOURCE_EXHAUSTED, 499 CANCELLED,"
    " 500 INTERNAL or UNKNOWN, 501 UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED)"
    " with a google.rpc.Status body whose details keep google.rpc.BadRequest field"
    " violations. With [callers] configured every route needs `Authorization: Bearer"
    " <token>`. A `grpc-timeout` header (e.g. 30S) sets the call's deadline. Generated"
    " from protos/imgate/v1/gateway.proto by scripts/gen_openapi.py."
)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """protoc's view of the API and google.rpc.Status, with comments."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # googleapis-common-protos ships its .proto files beside its Python modules.
    common = Path(annotations_pb2.__file__).resolve().parent.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{common}",
                f"-I{well_known}",
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                API_FILE,
                *ERROR_FILES,
            ],
            check=True,
            cwd=PROTO_ROOT,
        )
        # google.api.annotations_pb2 is imported: the http option parses as its type.
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class _Comments:
    """Leading comments by descriptor path, per file."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto | None) -> None:
        locations = file.source_code_info.location if file is not None else ()
        self._by_path = {
            tuple(location.path): " ".join(
                line.strip() for line in location.leading_comments.strip().splitlines()
            )
            for location in locations
            if location.leading_comments
        }

    def of(self, *path: int) -> str:
        return self._by_path.get(path, "")


class Document:
    """The OpenAPI document under construction."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = {file.name: file for file in files.file}
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str]] = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, _Comments, list[int]]] = {}
        self._message_paths: dict[str, tuple[_Comments, list[int]]] = {}
        for file in files.file:
            # Only the API's own comments: googleapis' may change with any release of
            # googleapis-common-protos, and the document must not drift with it.
            comments = _Comments(file if file.name == API_FILE else None)
            for index, message in enumerate(file.message_type):
                self._index_message(f"{file.package}.{message.name}", message, comments, [4, index])
            for index, enum in enumerate(file.enum_type):
                self.enums[f"{file.package}.{enum.name}"] = (enum, comments, [5, index])
        self.schemas: dict[str, Any] = {}

    def _index_message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        comments: _Comments,
        path: list[int],
    ) -> None:
        self.messages[name] = (message, comments.of(*path))
        self._message_paths[name] = (comments, path)
        for index, nested in enumerate(message.nested_type):
            self._index_message(f"{name}.{nested.name}", nested, comments, [*path, 3, index])
        for index, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, comments, [*path, 4, index])

    def ref(self, full_name: str) -> dict[str, Any]:
        """A reference to the schema of a message or enum, adding it (and what it uses)."""
        if full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full_name])
        if full_name not in self.schemas:
            self.schemas[full_name] = {}  # placed first: recursive types terminate
            if full_name in self.enums:
                self.schemas[full_name] = self._enum(full_name)
            else:
                self.schemas[full_name] = self._message(full_name)
        return {"$ref": f"#/components/schemas/{full_name}"}

    def _enum(self, full_name: str) -> dict[str, Any]:
        enum, comments, path = self.enums[full_name]
        values = [value.name for value in enum.value]
        lines = [comments.of(*path)]
        lines += [
            f"{value.name}: {comments.of(*path, 2, index)}"
            for index, value in enumerate(enum.value)
            if comments.of(*path, 2, index)
        ]
        return {"type": "string", "enum": values, "description": "\n".join(lines).strip()}

    def _message(self, full_name: str) -> dict[str, Any]:
        message, description = self.messages[full_name]
        comments, path = self._message_paths[full_name]
        properties: dict[str, Any] = {}
        for index, field in enumerate(message.field):
            schema = self.field_schema(field)
            text = comments.of(*path, 2, index)
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = message.oneof_decl[field.oneof_index].name
                text = f"{text} (oneof {oneof}: at most one of its fields is set)".strip()
            if text:
                schema["description"] = text
            properties[field.json_name] = schema
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if description:
            schema["description"] = description
        return schema

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_ENUM):
            item = self.ref(field.type_name.lstrip("."))
        else:
            item = dict(_SCALARS[field.type])
        if field.label == _F.LABEL_REPEATED:
            return {"type": "array", "items": item}
        return item


def build() -> dict[str, Any]:
    document = Document(descriptor_set())
    api = document.files[API_FILE]
    comments = _Comments(api)
    if len(api.service) != 1:
        raise SystemExit(f"{API_FILE}: expected one service")
    service, service_index = api.service[0], 0
    paths: dict[str, dict[str, Any]] = {}
    for method_index, method in enumerate(service.method):
        if not method.options.HasExtension(annotations_pb2.http):
            continue  # not served over HTTP
        option = method.options.Extensions[annotations_pb2.http]
        description = comments.of(6, service_index, 2, method_index)
        for number, rule in enumerate([option, *option.additional_bindings]):
            verb = rule.WhichOneof("pattern")
            if verb not in ("get", "put", "post", "delete", "patch"):
                raise SystemExit(f"{method.name}: unsupported pattern {verb}")
            template = getattr(rule, verb)
            operation = _operation(document, method, rule.body, template, description)
            operation["operationId"] = method.name + (f"_{number}" if number else "")
            paths.setdefault(template, {})[verb] = operation
    status = document.ref(STATUS)
    document.ref("google.rpc.BadRequest")  # the detail INVALID_ARGUMENT carries
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"imgate {service.name}",
            "version": api.package.rpartition(".")[2],
            "description": f"{comments.of(6, service_index)} {_INFO}".strip(),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": service.name}],
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A configured caller's token (needed when [callers] exist).",
                }
            },
            "responses": {
                "Error": {
                    "description": "The call failed: google.rpc.Status with its details.",
                    "content": {"application/json": {"schema": status}},
                }
            },
            "schemas": dict(sorted(document.schemas.items())),
        },
    }


def _operation(
    document: Document,
    method: descriptor_pb2.MethodDescriptorProto,
    body: str,
    template: str,
    description: str,
) -> dict[str, Any]:
    request_name = method.input_type.lstrip(".")
    request, _ = document.messages[request_name]
    fields = {field.name: field for field in request.field}
    _, variables = compile_template(template)
    parameters: list[dict[str, Any]] = []
    for variable in variables:
        parameters.append(
            {
                "name": variable,
                "in": "path",
                "required": True,
                "schema": document.field_schema(fields[variable]),
            }
        )
    if body != "*":
        for field in request.field:
            if field.name in variables or field.name == body:
                continue
            schema = document.field_schema(field)
            if "$ref" in schema and field.type == _F.TYPE_MESSAGE:
                continue  # nested messages are not query parameters
            parameters.append(
                {
                    "name": field.json_name,
                    "in": "query",
                    "required": False,
                    "schema": schema,
                    **({"explode": True} if schema.get("type") == "array" else {}),
                }
            )
    output = document.ref(method.output_type.lstrip("."))
    operation: dict[str, Any] = {
        "tags": ["GatewayService"],
        "summary": description.split(". ")[0].rstrip("."),
        "description": description + (_STREAM_NOTE if method.server_streaming else ""),
        "parameters": parameters,
    }
    if method.client_streaming:
        operation["requestBody"] = {
            "required": True,
            "description": f"The {body} values, one per line (UTF-8), streamed.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif body == "*":
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": document.ref(request_name)}},
        }
    elif body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": document.field_schema(fields[body])}},
        }
    if method.server_streaming:
        content = {
            "application/x-ndjson": {"schema": output},
            "text/event-stream": {"schema": {"type": "string"}},
        }
        success = "One response message per line, or per event."
    else:
        content = {"application/json": {"schema": output}}
        success = "The response message."
    operation["responses"] = {
        "200": {"description": success, "content": content},
        "default": {"$ref": "#/components/responses/Error"},
    }
    return operation


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the document is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print("openapi.json is stale; run: python scripts/gen_openapi.py", file=sys.stderr)
            return 1
        print("openapi.json is up to date")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
