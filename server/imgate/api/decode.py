"""Registering GatewayService so that undecodable requests are INVALID_ARGUMENT.

grpcio decodes a request with the registered deserializer before the servicer runs; when
that raises (bytes that are not a protobuf, a string field that is not UTF-8), grpc.aio
ends the call UNKNOWN with "Unexpected <class 'google.protobuf.message.DecodeError'>..."
in the status text. CONTRACT §8 rule 23 wants INVALID_ARGUMENT and no Python exception in
any error text, so the handlers registered here take the raw bytes and decode them
themselves. Every RPC of the service is registered from its descriptor, whatever its
streaming shape, so RPCs added later are covered without a change here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.descriptor import MethodDescriptor

from imgate.v1 import gateway_pb2

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
MAX_REQUEST_BYTES = 16 << 20
"""The largest request message (gRPC) or JSON body (HTTP) the gateway reads."""


def decode_request(raw: bytes, message_type: type[protobuf_message.Message]) -> Any:
    """`raw` parsed as `message_type`, or None when it is not a valid encoding of one."""
    request = message_type()
    try:
        request.ParseFromString(raw)
    except (protobuf_message.DecodeError, RuntimeError, ValueError):
        return None
    return request


def undecodable_text(method: MethodDescriptor) -> str:
    """The status text for a request that is not a valid `method` input."""
    return (
        f"the request is not a valid {method.input_type.full_name}: not protobuf wire"
        " format, or a string field is not UTF-8"
    )


def add_gateway_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Register every GatewayService RPC of `servicer` on `server` (instead of the
    generated add_GatewayServiceServicer_to_server), decoding requests as above."""
    handlers = {
        method.name: _handler(method, getattr(servicer, method.name)) for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )


def _handler(
    method: MethodDescriptor, behaviour: Callable[..., Any]
) -> grpc.RpcMethodHandler[Any, Any]:
    request_type: type[protobuf_message.Message] = getattr(gateway_pb2, method.input_type.name)
    text = undecodable_text(method)

    async def one(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        request = decode_request(raw, request_type)
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, text)
        return request

    async def many(
        raws: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for raw in raws:
            yield await one(raw, context)

    if inspect.isasyncgenfunction(behaviour):

        async def run_generator(raw: Any, context: Any) -> AsyncIterator[Any]:
            request = many(raw, context) if method.client_streaming else await one(raw, context)
            async for response in behaviour(request, context):
                yield response

        run: Callable[..., Any] = run_generator
    else:

        async def run_coroutine(raw: Any, context: Any) -> Any:
            request = many(raw, context) if method.client_streaming else await one(raw, context)
            result = behaviour(request, context)
            # The generated base class's placeholders (RPCs not implemented yet) are plain
            # functions; implemented ones are coroutines.
            return await result if inspect.isawaitable(result) else result

        run = run_coroutine

    def serializer(response: Any) -> bytes:
        # Streams write stored outcome pages as bytes, already in the wire format.
        if type(response) is bytes:
            return response
        data: bytes = response.SerializeToString()
        return data

    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(run, response_serializer=serializer)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(run, response_serializer=serializer)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(run, response_serializer=serializer)
    return grpc.unary_unary_rpc_method_handler(run, response_serializer=serializer)
