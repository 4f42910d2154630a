"""Server reflection under both names: grpc.reflection.v1 (what grpcurl asks first) and v1alpha."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.conftest import StartGateway


def _ask(target: str, service: str, request: reflection_pb2.ServerReflectionRequest) -> object:
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return next(iter(call(iter([request]), timeout=10)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_services_and_describes_them(
    start_gateway: StartGateway, version: str
) -> None:
    gateway = await start_gateway()
    service = f"grpc.reflection.{version}.ServerReflection"
    listing = await asyncio.to_thread(
        _ask, gateway.target, service, reflection_pb2.ServerReflectionRequest(list_services="")
    )
    assert isinstance(listing, reflection_pb2.ServerReflectionResponse)
    names = {s.name for s in listing.list_services_response.service}
    assert {
        "imgate.v1.GatewayService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    for symbol in ("imgate.v1.GatewayService", "grpc.reflection.v1.ServerReflection"):
        found = await asyncio.to_thread(
            _ask,
            gateway.target,
            service,
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol),
        )
        assert isinstance(found, reflection_pb2.ServerReflectionResponse)
        assert found.WhichOneof("message_response") == "file_descriptor_response", found
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in found.file_descriptor_response.file_descriptor_proto
        ]
        package = symbol.rpartition(".")[0]
        assert any(f.package == package for f in files)
