"""Short names for the API's enums, for printing and comparing outcomes."""

from __future__ import annotations

from google.protobuf.descriptor import EnumDescriptor

from imgate.v1 import gateway_pb2

ACCEPTED = gateway_pb2.DELIVERY_STATE_ACCEPTED
"""The vendor accepted the message for this recipient."""
FAILED = gateway_pb2.DELIVERY_STATE_FAILED
"""Definitely not delivered; safe to re-send when the reason is transient."""
UNCERTAIN = gateway_pb2.DELIVERY_STATE_UNCERTAIN
"""May or may not have been delivered; never re-send blindly."""


def state_name(state: int) -> str:
    """``DELIVERY_STATE_ACCEPTED`` -> ``"ACCEPTED"``; an unknown (newer) value -> its number."""
    return _short_name(gateway_pb2.DeliveryState.DESCRIPTOR, state)


def reason_name(reason: int) -> str:
    """``FAILURE_REASON_TIMEOUT`` -> ``"TIMEOUT"``; an unknown (newer) value -> its number."""
    return _short_name(gateway_pb2.FailureReason.DESCRIPTOR, reason)


def backend_state_name(state: int) -> str:
    """``BACKEND_STATE_SERVING`` -> ``"SERVING"``; an unknown (newer) value -> its number."""
    return _short_name(gateway_pb2.BackendState.DESCRIPTOR, state)


def _short_name(enum: EnumDescriptor, number: int) -> str:
    value = enum.values_by_number.get(number)
    if value is None:
        # The server may be newer than this client: enum values may be added.
        return str(number)
    # Every enum of the API prefixes its values with its own name, as its zero value shows.
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix)
