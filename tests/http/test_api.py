"""Every HTTP/JSON route against a real gateway: the same answers as its gRPC call, field by
field, streams as NDJSON and SSE resumed from a cursor, and the errors' HTTP statuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import grpc
from google.rpc import code_pb2, status_pb2

from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import text_request
from tests.http.conftest import HttpGateway, StartHttp, as_dict, from_json

TEXT = {"text": {"text": "hello"}}


def _submit(
    recipients: list[str], backend: str = "tencent", **fields: Any
) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest.FromString(
        text_request(recipients, backend, **fields).SerializeToString()
    )


async def _until_done(http: HttpGateway, batch_id: str) -> pb.Batch:
    for _ in range(600):
        batch = await http.grpc.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=5)
        if batch.state == pb.BATCH_STATE_DONE:
            return batch
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


async def test_unary_routes_answer_what_grpc_answers_field_by_field(http: HttpGateway) -> None:
    stub = http.grpc.stub
    # ListBackends
    status, body = await http.call("GET", "/v1/backends")
    assert status == 200
    assert body == as_dict(await stub.ListBackends(pb.ListBackendsRequest(), timeout=5))
    # SubmitBatch: the same request_id and payload over both transports is one batch.
    request = _submit(["bob", "carol", "ghost1", "bob"], request_id="parity-1")
    submitted = await stub.SubmitBatch(request, timeout=5)
    done = await _until_done(http, submitted.batch_id)
    status, body = await http.call(
        "POST",
        "/v1/batches",
        {
            "requestId": "parity-1",
            "backend": "tencent",
            "senderId": "imgate_sender",
            "recipientIds": ["bob", "carol", "ghost1", "bob"],
            "message": TEXT,
        },
    )
    assert status == 200
    assert body == as_dict(done)
    assert from_json(body, pb.Batch) == done
    # GetBatch, ListBatches, CancelBatch (of an ended batch: nothing changes)
    path = f"/v1/batches/{done.batch_id}"
    assert await http.call("GET", path) == (200, as_dict(done))
    listed = await stub.ListBatches(pb.ListBatchesRequest(page_size=10), timeout=5)
    assert await http.call("GET", "/v1/batches?pageSize=10") == (200, as_dict(listed))
    cancelled = await stub.CancelBatch(pb.CancelBatchRequest(batch_id=done.batch_id), timeout=5)
    assert await http.call("POST", path + ":cancel") == (200, as_dict(cancelled))
    assert await http.call("POST", path + ":cancel", {}) == (200, as_dict(cancelled))


async def test_list_batches_pages_with_the_query(http: HttpGateway) -> None:
    for n in range(3):
        await http.grpc.stub.SubmitBatch(_submit([f"u{n}"]), timeout=5)
    status, first = await http.call("GET", "/v1/batches?page_size=2")
    assert status == 200
    assert len(first["batches"]) == 2
    token = first["nextPageToken"]
    grpc_page = await http.grpc.stub.ListBatches(
        pb.ListBatchesRequest(page_size=2, page_token=token), timeout=5
    )
    status, second = await http.call(
        "GET", "/v1/batches", params={"pageSize": "2", "pageToken": token}
    )
    assert (status, second) == (200, as_dict(grpc_page))
    assert len(second["batches"]) == 1


async def test_batch_send_streams_ndjson_like_grpc(http: HttpGateway) -> None:
    request = text_request(["a", "b", "ghost1", "a"], "yunxin_v2", request_id="send-parity")
    messages, outcomes, summary = await http.grpc.send(request)
    body = json.loads(json.dumps(as_dict(request)))
    lines = await http.lines("/v1/batches:send", method="POST", data=json.dumps(body))
    parsed = [from_json(line, pb.BatchSendResponse) for line in lines]
    # The same request_id attaches to the same batch: its outcomes replayed.
    assert [o for m in parsed for o in m.outcomes] == outcomes
    assert parsed[-1].summary == summary
    assert {m.batch_id for m in parsed if m.batch_id} == {messages[0].batch_id}
    assert all(not m.HasField("summary") for m in parsed[:-1])


async def test_batch_send_without_request_id_sends_and_its_summary_counts(
    http: HttpGateway, sandbox: SandboxServer
) -> None:
    body = {"backend": "tencent", "recipientIds": ["x1", "x2", "ghost9"], "message": TEXT}
    lines = await http.lines("/v1/batches:send", method="POST", data=json.dumps(body))
    summary = lines[-1]["summary"]
    assert (summary["total"], summary["accepted"], summary["failed"]) == (3, 2, 1)
    assert sandbox.state.stats("tencent").deliveries == 2


async def test_upload_recipients_reads_lines_like_grpc_pages(http: HttpGateway) -> None:
    ids = ["a", "b", "a", "c"]
    grpc_list = await http.grpc.stub.UploadRecipients(
        iter([pb.UploadRecipientsRequest(request_id="list-1", recipient_ids=ids)]), timeout=5
    )
    # A byte-order mark, CRLF, blank lines and surrounding blanks are not ids.
    body = "\ufeffa\r\n b\n\na\nc".encode()
    status, answer = await http.call_raw("POST", "/v1/recipientLists?request_id=list-1", body)
    assert status == 200
    assert answer == as_dict(grpc_list)
    # The list feeds SubmitBatch over either transport.
    status, batch = await http.call(
        "POST",
        "/v1/batches",
        {"backend": "tencent", "recipientList": answer["recipientList"], "message": TEXT},
    )
    assert status == 200
    assert batch["total"] == 3


async def test_watch_ndjson_and_sse_resume_from_a_cursor_exactly_once(
    start_http: StartHttp,
) -> None:
    # 500 recipients a call and at most 2,000 outcomes a message: several messages.
    http = await start_http()
    ids = [f"r{n}" for n in range(5000)]
    batch = await http.grpc.stub.SubmitBatch(_submit(ids), timeout=10)
    await _until_done(http, batch.batch_id)
    path = f"/v1/batches/{batch.batch_id}/outcomes"
    grpc_messages = [
        m
        async for m in http.grpc.stub.WatchBatch(
            pb.WatchBatchRequest(batch_id=batch.batch_id), timeout=10
        )
    ]
    lines = await http.lines(path)
    assert [from_json(line, pb.WatchBatchResponse) for line in lines] == grpc_messages
    assert len(lines) >= 3
    first = lines[0]
    # NDJSON from the first message's cursor: the rest, none twice.
    rest = await http.lines(path, params={"cursor": first["cursor"]})
    recipients = [o["recipientId"] for line in [first, *rest] for o in line.get("outcomes", [])]
    assert sorted(recipients) == sorted(ids)
    assert rest[-1]["summary"]["total"] == 5000
    # SSE: read one event, drop the connection, reconnect with Last-Event-ID.
    sse = {"Accept": "text/event-stream"}
    seen: list[str] = []
    async with http.session.get(http.url(path), headers=sse) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event = await _next_event(response.content)
        last_id = event["id"]
        seen += [o["recipientId"] for o in json.loads(event["data"])["outcomes"]]
    async with http.session.get(
        http.url(path), headers={**sse, "Last-Event-ID": last_id}
    ) as response:
        events = [e async for e in _events(response.content)]
    assert events[-1] == {"event": "end", "data": "{}"}
    for event in events[:-1]:
        seen += [o["recipientId"] for o in json.loads(event["data"]).get("outcomes", [])]
    assert sorted(seen) == sorted(ids)  # every outcome once: none lost, none repeated
    summary = json.loads(events[-2]["data"])
    assert summary["summary"] == as_dict(grpc_messages[-1].summary)
    assert [e["id"] for e in events[:-1]] == [line["cursor"] for line in lines[1:]]


async def _events(content: aiohttp.StreamReader) -> Any:
    while True:
        event = await _next_event(content)
        if not event:
            return
        yield event


async def _next_event(content: aiohttp.StreamReader) -> dict[str, str]:
    event: dict[str, str] = {}
    async for raw in content:
        line = raw.decode().rstrip("\n")
        if not line:
            return event
        field, _, value = line.partition(": ")
        event[field] = event.get(field, "") + value
    return event


async def test_watch_of_a_running_batch_goes_live(
    http: HttpGateway, sandbox: SandboxServer
) -> None:
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.5, times=1)])
    batch = await http.grpc.stub.SubmitBatch(_submit(["slow1", "slow2"]), timeout=5)
    lines = await http.lines(f"/v1/batches/{batch.batch_id}/outcomes")
    assert lines[-1]["summary"]["accepted"] == 2
    assert sum(len(line.get("outcomes", [])) for line in lines) == 2


# -- errors ---------------------------------------------------------------------------------


def _status(body: Any) -> status_pb2.Status:
    return from_json(body, status_pb2.Status)


async def test_invalid_argument_is_400_with_bad_request_violations(http: HttpGateway) -> None:
    status, body = await http.call(
        "POST", "/v1/batches", {"backend": "nope", "recipientIds": [], "message": {}}
    )
    assert status == 400
    error = _status(body)
    assert error.code == code_pb2.INVALID_ARGUMENT
    violations = body["details"][0]
    assert violations["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fields = {v["field"] for v in violations["fieldViolations"]}
    assert {"backend", "recipient_ids", "message"} <= fields
    # The same call over gRPC: the same code, message and details.
    with_grpc = await _grpc_status(
        http.grpc.stub.SubmitBatch(pb.SubmitBatchRequest(backend="nope"))
    )
    assert with_grpc == error


async def _grpc_status(call: Any) -> status_pb2.Status:
    from grpc_status import rpc_status

    try:
        await call
    except grpc.aio.AioRpcError as error:
        found = rpc_status.from_call(error)  # type: ignore[arg-type]
        return found if found is not None else status_pb2.Status(code=error.code().value[0])
    raise AssertionError("the call succeeded")


async def test_bodies_and_queries_that_are_not_the_request_are_400(http: HttpGateway) -> None:
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/v1/batches", b"{not json"),
        ("POST", "/v1/batches", b'{"recipientIds": [NaN]}'),
        ("POST", "/v1/batches", b'{"noSuchField": 1}'),
        ("POST", "/v1/batches", b"[1, 2]"),
        ("GET", "/v1/batches?pageSize=abc", None),
        ("GET", "/v1/batches?noSuch=1", None),
        ("GET", "/v1/batches?pageSize=1&pageSize=2", None),
        ("GET", "/v1/batches?pageSize=-1", None),
        ("GET", "/v1/batches/x/outcomes?cursor=not-a-cursor", None),
    ]
    for method, path, data in cases:
        async with http.session.request(method, http.url(path), data=data) as response:
            body = await response.json()
            assert response.status == 400, (path, data, body)
            assert body["code"] == code_pb2.INVALID_ARGUMENT
            assert "Traceback" not in body["message"]
            assert "Error" not in body["message"]


async def test_not_found_wrong_method_and_unknown_routes(http: HttpGateway) -> None:
    for path in ("/v1/batches/nope", "/v1/batches/nope/outcomes"):
        status, body = await http.call("GET", path)
        assert (status, body["code"]) == (404, code_pb2.NOT_FOUND)
    status, body = await http.call("POST", "/v1/batches/nope:cancel")
    assert (status, body["code"]) == (404, code_pb2.NOT_FOUND)
    status, body = await http.call("GET", "/v1/no/such/route")
    assert (status, body["code"]) == (404, code_pb2.NOT_FOUND)
    async with http.session.delete(http.url("/v1/batches")) as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}


async def test_an_oversized_body_is_resource_exhausted(http: HttpGateway) -> None:
    big = b'{"recipientIds": ["' + b"a" * (17 << 20) + b'"]}'
    async with http.session.post(http.url("/v1/batches"), data=big) as response:
        body = await response.json()
    assert (response.status, body["code"]) == (429, code_pb2.RESOURCE_EXHAUSTED)


async def test_a_full_queue_is_resource_exhausted(
    start_http: StartHttp, sandbox: SandboxServer
) -> None:
    http = await start_http(backend_overrides={"max_running_batches": 1, "max_queued_batches": 1})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=2.0)])
    codes = []
    for n in range(4):
        status, body = await http.call(
            "POST",
            "/v1/batches",
            {"backend": "tencent", "recipientIds": [f"q{n}"], "message": TEXT},
        )
        codes.append((status, body.get("code", 0)))
    assert (429, code_pb2.RESOURCE_EXHAUSTED) in codes


async def test_a_passed_deadline_is_504(http: HttpGateway, sandbox: SandboxServer) -> None:
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=3.0, times=1)])
    batch = await http.grpc.stub.SubmitBatch(_submit(["late"]), timeout=5)
    status, body = await http.call(
        "GET", f"/v1/batches/{batch.batch_id}/outcomes", headers={"grpc-timeout": "200m"}
    )
    assert (status, body["code"]) == (504, code_pb2.DEADLINE_EXCEEDED)
    status, body = await http.call("GET", "/v1/backends", headers={"grpc-timeout": "soon"})
    assert status == 400


async def test_a_stopping_gateway_is_503(http: HttpGateway) -> None:
    stopping = http.grpc.gateway.batches.stopping
    stopping.set()
    try:
        status, body = await http.call(
            "POST", "/v1/batches", {"recipientIds": ["a"], "message": TEXT}
        )
    finally:
        stopping.clear()
    assert (status, body["code"]) == (503, code_pb2.UNAVAILABLE)


async def test_http_calls_count_in_the_rpc_metrics(http: HttpGateway) -> None:
    await http.call("GET", "/v1/batches/nope")
    await http.call("GET", "/v1/backends")
    text = http.grpc.gateway.metrics.exposition().decode()
    assert (
        'grpc_server_handled_total{grpc_code="NOT_FOUND",grpc_method="GetBatch",'
        'grpc_service="imgate.v1.GatewayService",grpc_type="unary",transport="http"} 1.0'
    ) in text
    assert (
        'grpc_server_msg_sent_total{grpc_method="ListBackends",grpc_service='
        '"imgate.v1.GatewayService",grpc_type="unary",transport="http"} 1.0'
    ) in text


async def test_a_client_that_leaves_batch_send_cancels_its_bound_batch(
    start_http: StartHttp, sandbox: SandboxServer
) -> None:
    http = await start_http(backend_overrides={"max_in_flight": 1})  # one call at a time
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=1.0)])
    ids = [f"gone{n}" for n in range(1500)]  # three vendor calls, the later ones unsent
    body = {"backend": "tencent", "recipientIds": ids, "message": TEXT}
    async with http.session.post(http.url("/v1/batches:send"), json=body) as response:
        assert response.status == 200
        first = json.loads(await response.content.readline())
        batch_id = first["batchId"]
        response.close()  # the caller goes away mid-stream
    for _ in range(200):
        batch = await http.grpc.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=5)
        if batch.state == pb.BATCH_STATE_CANCELLED:
            break
        await asyncio.sleep(0.05)
    assert batch.state == pb.BATCH_STATE_CANCELLED
    assert batch.failed > 0  # unsent recipients ended FAILED/NOT_ATTEMPTED


async def test_bad_upload_lines_are_400_and_keep_nothing(http: HttpGateway) -> None:
    for body, field in (
        (b"good\nbad\x01id\n", "pages[0].recipient_ids[1]"),
        (b"good\n\xff\xfe\n", "line 2"),
        (b"good\n" + b"x" * 5000, "line 2"),
        (b"", "recipient_ids"),
    ):
        status, answer = await http.call_raw("POST", "/v1/recipientLists", body)
        assert status == 400, body[:20]
        violations = answer["details"][0]["fieldViolations"]
        assert violations[0]["field"] == field
