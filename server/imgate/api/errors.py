"""What the API answers when a call fails: one error type for every transport.

The service raises `ApiError` with a gRPC status code, a message for people, and for
INVALID_ARGUMENT the field violations (google.rpc.BadRequest). The gRPC servicer turns it
into a status with details; the HTTP/JSON layer into the code's HTTP status and a
google.rpc.Status body. No text shows a Python exception (CONTRACT §8 rule 23).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from imgate.store.records import StoreError
from imgate.vendors.base.translator import FieldViolation


class ApiError(Exception):
    """A call that fails as a whole: nothing was sent because of it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = tuple(violations)

    def status(self) -> status_pb2.Status:
        """As google.rpc.Status, with the violations as a BadRequest detail."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.violations
                    ]
                )
            )
            status.details.append(detail)
        return status


def invalid(problems: Sequence[FieldViolation]) -> ApiError:
    """INVALID_ARGUMENT naming the fields (the first five in the message)."""
    message = "; ".join(f"{p.field}: {p.description}" for p in problems[:5])
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message or "invalid request", problems)


def as_api_error(exc: Exception) -> ApiError | None:
    """The ApiError a transport answers for `exc`, or None when `exc` is a bug.

    A store that cannot be used (a full disk, a database that does not answer) is
    UNAVAILABLE: the call changed nothing it reports, so a retry is safe.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StoreError):
        return ApiError(
            grpc.StatusCode.UNAVAILABLE,
            f"the store cannot be used now ({exc}); nothing was stored or changed: a retry is safe",
        )
    return None


def unavailable(message: str = "the gateway is shutting down") -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, message)


def not_found(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT  # one numbering
