"""Routes come from the proto's google.api.http options, nothing else: the contract's
table, a service the router has never seen, and every gRPC code's HTTP status."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client import CollectorRegistry

from imgate.api.decode import SERVICE
from imgate.api.errors import ApiError
from imgate.api.http import HttpServer
from imgate.api.http.routes import compile_template, service_routes
from imgate.api.http.transcode import HTTP_STATUS
from imgate.config.load import sandbox_config
from imgate.observability.metrics import GrpcMetrics

# CONTRACT §10 rule 29, as written.
CONTRACT_ROUTES = {
    "SubmitBatch": ("POST", "/v1/batches"),
    "BatchSend": ("POST", "/v1/batches:send"),
    "GetBatch": ("GET", "/v1/batches/{batch_id}"),
    "ListBatches": ("GET", "/v1/batches"),
    "CancelBatch": ("POST", "/v1/batches/{batch_id}:cancel"),
    "RecallBatch": ("POST", "/v1/batches/{batch_id}:recall"),
    "WatchBatch": ("GET", "/v1/batches/{batch_id}/outcomes"),
    "UploadRecipients": ("POST", "/v1/recipientLists"),
    "ListBackends": ("GET", "/v1/backends"),
}


def test_every_rpc_is_served_on_the_contracts_route() -> None:
    routes = {route.rpc.name: (route.method, route.template) for route in service_routes(SERVICE)}
    # Every RPC of the service has a route (an RPC added without its option fails here)...
    assert set(routes) == {method.name for method in SERVICE.methods}
    # ...and it is the contract's (RecallBatch's too, once the RPC exists).
    for name, route in routes.items():
        assert CONTRACT_ROUTES[name] == route, name


def test_templates_compile_to_one_segment_variables_and_verbs() -> None:
    pattern, variables = compile_template("/v1/batches/{batch_id}:cancel")
    assert variables == ("batch_id",)
    assert pattern.match("/v1/batches/abc:cancel").groups() == ("abc",)  # type: ignore[union-attr]
    assert pattern.match("/v1/batches/a/b:cancel") is None
    assert pattern.match("/v1/batches/abc:recall") is None
    for bad in ("v1/x", "/v1/{name=**}", "/v1/*", "/v1/x:bad verb"):
        with pytest.raises(ValueError, match="template"):
            compile_template(bad)


# -- a service the router has never seen ---------------------------------------------------


def _fake_service() -> Any:
    """fake.v1.EchoService, annotated like the real one, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for module in (descriptor_pb2, http_pb2, annotations_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        pool.Add(file)
    file = descriptor_pb2.FileDescriptorProto(
        name="fake/v1/echo.proto",
        package="fake.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    request = file.message_type.add(name="EchoRequest")
    request.field.add(name="name", number=1, type=9, label=1, json_name="name")
    request.field.add(name="code", number=2, type=9, label=1, json_name="code")
    request.field.add(name="cursor", number=3, type=9, label=1, json_name="cursor")
    reply = file.message_type.add(name="EchoReply")
    reply.field.add(name="name", number=1, type=9, label=1, json_name="name")
    reply.field.add(name="cursor", number=2, type=9, label=1, json_name="cursor")
    service = file.service.add(name="EchoService")
    for name, verb, template, streams in (
        ("GetEcho", "get", "/v1/echoes/{name}", False),
        ("WatchEchoes", "get", "/v1/echoes/{name}:watch", True),
        ("MakeEcho", "post", "/v1/echoes", False),
    ):
        method = service.method.add(
            name=name,
            input_type=".fake.v1.EchoRequest",
            output_type=".fake.v1.EchoReply",
            server_streaming=streams,
        )
        rule = method.options.Extensions[annotations_pb2.http]
        setattr(rule, verb, template)
        if verb == "post":
            rule.body = "*"
    pool.Add(file)
    return pool.FindServiceByName("fake.v1.EchoService")


SERVICE_UNDER_TEST = _fake_service()
Reply = message_factory.GetMessageClass(SERVICE_UNDER_TEST.methods_by_name["GetEcho"].output_type)


class EchoApi:
    """GetEcho and WatchEchoes; MakeEcho is not implemented (501)."""

    async def get_echo(self, request: Any) -> Any:
        if request.code == "crash":
            raise RuntimeError("secret internals")
        if request.code:
            raise ApiError(grpc.StatusCode[request.code], f"as asked: {request.code}")
        return Reply(name=request.name)

    async def watch_echoes(self, request: Any) -> AsyncIterator[bytes]:
        start = int(request.cursor or 0)
        for n in range(start + 1, 4):
            yield Reply(name=request.name, cursor=str(n)).SerializeToString()
        if request.code:
            raise ApiError(grpc.StatusCode[request.code], "the stream broke")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    config = dataclasses.replace(sandbox_config(""), http_listen="127.0.0.1:0")
    metrics = GrpcMetrics(CollectorRegistry())
    server = HttpServer(config, EchoApi(), metrics, service=SERVICE_UNDER_TEST)
    async with TestClient(TestServer(server.app())) as test_client:
        yield test_client


async def test_a_new_annotated_rpc_is_served_without_router_code(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/v1/echoes/hello%20world")
    assert response.status == 200
    assert await response.json() == {"name": "hello world"}
    response = await client.get("/v1/echoes/x:watch")
    lines = [json.loads(line) async for line in response.content]
    assert lines == [{"name": "x", "cursor": str(n)} for n in (1, 2, 3)]
    response = await client.get("/v1/echoes/x:watch", headers={"Accept": "text/event-stream"})
    text = await response.text()
    assert text.startswith('id: 1\ndata: {"name":"x","cursor":"1"}\n\n')
    assert text.endswith("event: end\ndata: {}\n\n")
    # An EventSource reconnecting resumes after its last event id.
    response = await client.get(
        "/v1/echoes/x:watch", headers={"Accept": "text/event-stream", "Last-Event-ID": "2"}
    )
    assert (await response.text()).startswith('id: 3\ndata: {"name":"x","cursor":"3"}')
    # Annotated, not implemented: UNIMPLEMENTED.
    response = await client.post("/v1/echoes", json={"name": "x"})
    assert response.status == 501
    assert (await response.json())["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_every_grpc_code_answers_its_http_status(client: TestClient[Any, Any]) -> None:
    # The contract's list, from grpc-gateway's mapping.
    assert sorted(set(HTTP_STATUS.values())) == [
        200,
        400,
        401,
        403,
        404,
        409,
        412,
        429,
        499,
        500,
        501,
        503,
        504,
    ]
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    for code, status in HTTP_STATUS.items():
        if code == grpc.StatusCode.OK:
            continue
        response = await client.get(f"/v1/echoes/x?code={code.name}")
        body = await response.json()
        assert response.status == status, code
        assert body == {"code": code.value[0], "message": f"as asked: {code.name}"}
    response = await client.get("/v1/echoes/x?code=crash")
    assert response.status == 500
    assert await response.json() == {"code": 13, "message": "internal error"}


async def test_an_error_after_a_stream_started_is_its_last_line_or_event(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/v1/echoes/x:watch?code=UNAVAILABLE")
    assert response.status == 200
    lines = [json.loads(line) async for line in response.content]
    assert lines[-1] == {"error": {"code": 14, "message": "the stream broke"}}
    assert len(lines) == 4
    response = await client.get(
        "/v1/echoes/x:watch?code=UNAVAILABLE", headers={"Accept": "text/event-stream"}
    )
    text = await response.text()
    assert text.endswith('event: error\ndata: {"code":14,"message":"the stream broke"}\n\n')
