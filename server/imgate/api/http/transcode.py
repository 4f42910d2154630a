"""Between HTTP and protobuf: requests from a route's path variables, query and JSON body;
responses and errors in protobuf's canonical JSON mapping.

Query parameters name request fields (proto or JSON name, dotted for nested ones; a
repeated field may be given several times); an unknown one is INVALID_ARGUMENT, as an
unknown key is in the body. Path variables win over the body and the query, as in
grpc-gateway. Error texts quote at most 64 characters of the caller's input and never a
Python exception (CONTRACT §8 rule 23).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import FieldDescriptor

from imgate.api.errors import ApiError, invalid
from imgate.api.http.routes import Route, field_of
from imgate.api.validate import echo
from imgate.vendors.base.translator import FieldViolation

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
"""The HTTP status of each gRPC code (grpc-gateway's mapping, FAILED_PRECONDITION as its
v1 had it: 412)."""

_TRUE_FALSE = {"true": True, "false": False}


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def message_json(message: protobuf_message.Message) -> bytes:
    """A message in protobuf's canonical JSON (lowerCamelCase names, enums by name,
    64-bit integers as strings, fields at their default left out)."""
    return json_bytes(json_format.MessageToDict(message))


def error_json(error: ApiError) -> bytes:
    """`error` as a google.rpc.Status in JSON, its details (BadRequest) kept."""
    return message_json(error.status())


def parse_body(raw: bytes) -> Any:
    """A request body as strict JSON (no NaN or Infinity); INVALID_ARGUMENT otherwise."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid([FieldViolation("body", "not strict JSON in UTF-8")]) from None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def build_request(
    route: Route,
    variables: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: Any = None,
) -> protobuf_message.Message:
    """The RPC's request message from the path variables, the query and a parsed JSON
    body (None: no body). Raises ApiError (INVALID_ARGUMENT) naming what is wrong."""
    request_type = _message_class(route)
    request = request_type()
    if body is not None:
        if not route.body or route.rpc.client_streaming:
            raise invalid([FieldViolation("body", "this route takes no JSON body")])
        if route.body == "*":
            _merge(request, body, "body")
        else:
            _merge(request, {route.body: body}, "body")
    bound_by_body = set(request_type.DESCRIPTOR.fields_by_name) if route.body == "*" else set()
    values: dict[str, list[str]] = {}
    for name, value in query:
        values.setdefault(name, []).append(value)
    for name, given in values.items():
        field = field_of(request_type.DESCRIPTOR, name)
        top = name.split(".", 1)[0]
        if field is None or (field.type == FieldDescriptor.TYPE_MESSAGE and not _well_known(field)):
            raise invalid([FieldViolation(name[:64], "no such query parameter")])
        if top in bound_by_body:
            raise invalid([FieldViolation(name, "goes in the JSON body on this route")])
        if not field.is_repeated and len(given) > 1:
            raise invalid([FieldViolation(name, "given more than once")])
        _set(request, name, [_scalar(field, value, name) for value in given], field.is_repeated)
    for name, value in variables.items():
        field = field_of(request_type.DESCRIPTOR, name)
        assert field is not None  # checked when the routes were read
        _set(request, name, [_scalar(field, value, name)], repeated=False)
    return request


def _message_class(route: Route) -> type[protobuf_message.Message]:
    return message_factory.GetMessageClass(route.rpc.input_type)


def _well_known(field: FieldDescriptor) -> bool:
    """Message fields that JSON writes as one string (Timestamp, Duration, wrappers)."""
    return field.message_type is not None and field.message_type.full_name.startswith(
        "google.protobuf."
    )


def _scalar(field: FieldDescriptor, value: str, name: str) -> Any:
    """A query or path value as protobuf JSON would have it."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value not in _TRUE_FALSE:
            raise invalid([FieldViolation(name, "must be true or false")])
        return _TRUE_FALSE[value]
    return value  # numbers, enums and timestamps are accepted as strings by the parser


def _set(
    request: protobuf_message.Message, field_path: str, values: list[Any], repeated: bool
) -> None:
    *parents, leaf = field_path.split(".")
    target = request
    for name in parents:
        field = field_of(target.DESCRIPTOR, name)
        assert field is not None
        target = getattr(target, field.name)
    field = field_of(target.DESCRIPTOR, leaf)
    assert field is not None
    target.ClearField(field.name)
    _merge(target, {field.name: values if repeated else values[0]}, field_path)


def _merge(message: protobuf_message.Message, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise invalid([FieldViolation(where, "must be a JSON object")])
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        reason = str(exc).split("\n", 1)[0]
        raise invalid(
            [
                FieldViolation(
                    where,
                    f"not a valid {message.DESCRIPTOR.full_name} in protobuf JSON: {echo(reason)}",
                )
            ]
        ) from None
