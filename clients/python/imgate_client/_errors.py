"""Exceptions raised by the imgate clients.

Every failed RPC becomes a ``GatewayError``; the caller decides what to do next from its
``code``::

    GatewayError                 the RPC failed (``code``: a ``grpc.StatusCode``)
     └── InvalidRequestError     INVALID_ARGUMENT: the request is wrong as a whole and
                                 nothing was sent; ``violations`` names the fields to fix
"""

from __future__ import annotations

from typing import NamedTuple, cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class FieldViolation(NamedTuple):
    """One ``google.rpc.BadRequest`` field violation: which field is wrong and why."""

    field: str
    description: str


class GatewayError(Exception):
    """The gateway RPC failed; ``code`` is the gRPC status and ``details`` its message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidRequestError(GatewayError):
    """The request was refused as a whole (INVALID_ARGUMENT) and nothing was sent.

    ``violations`` lists the ``google.rpc.BadRequest`` field violations the server gave;
    it is empty when the server sent none.
    """

    def __init__(
        self, code: grpc.StatusCode, details: str, violations: tuple[FieldViolation, ...]
    ) -> None:
        super().__init__(code, details)
        self.violations = violations

    def __str__(self) -> str:
        listed = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        return f"{super().__str__()} ({listed})" if listed else super().__str__()


def error_from_rpc(error: grpc.RpcError) -> GatewayError:
    """Translate a grpc (sync or aio) RPC error into the client's exception."""
    code = error.code()
    details = error.details() or ""
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequestError(code, details, _field_violations(error))
    return GatewayError(code, details)


def _field_violations(error: grpc.RpcError) -> tuple[FieldViolation, ...]:
    # Raised RpcErrors (sync rendezvous and aio AioRpcError) are also grpc.Call objects,
    # which is what from_call reads the status details from.
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        # The detailed status disagrees with the call's own code or message: don't trust it.
        return ()
    if status is None:
        return ()
    violations: list[FieldViolation] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend(
                FieldViolation(str(v.field), str(v.description))
                for v in bad_request.field_violations
            )
    return tuple(violations)
