"""Stage 14's minimal gateway: the least a gRPC gateway of the same proto can do per call.

    python -m bench._mini_gateway --port P --url http://127.0.0.1:S --vendor tencent \
        --max-in-flight 256

Its BatchSend builds one vendor request with imgate's translator (fresh signature), sends
it with one aiohttp POST, parses the answer with the translator and writes one message
holding every outcome and the summary. No validation, no store, no quota, no retries,
no metrics: what is left is the floor any Python gateway of this proto pays per request
(grpc.aio, the translator, aiohttp, one outcome message). Serves the gateway's server
options (`bench._stream_proc`). Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
import uuid
from typing import Any

import aiohttp
import grpc

from bench._http_client import send_call
from bench._workload import REQUEST_TIMEOUT_S
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.base.translator import Disposition, Translator, count_states, fill_outcome
from imgate.vendors.registry import BY_VENDOR


class MinimalGateway(pb_grpc.GatewayServiceServicer):
    """BatchSend as one vendor call; every other method is left unimplemented."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, vendor: str) -> None:
        translator_type = BY_VENDOR[vendor].translator
        self.translator: Translator = translator_type(translator_type.spec.sandbox_credentials)
        self.session = session
        self.base_url = base_url

    async def BatchSend(  # type: ignore[override]
        self, request: pb.BatchSendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        translator = self.translator
        ids = list(request.recipient_ids)
        prepared = translator.prepare(request)
        call = translator.build(prepared, ids, uuid.uuid4().hex, time.time(), secrets.token_hex(16))
        status, body = await send_call(self.session, self.base_url, call)
        result = translator.parse(ids, status, body)
        if result.disposition is not Disposition.DONE:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"vendor answer {result.disposition.value}"
            )
        response = pb.BatchSendResponse()
        add = response.outcomes.add
        for index, item in enumerate(result.results):
            outcome = add()
            outcome.recipient_id = item.recipient_id
            outcome.index = index
            outcome.attempts = 1
            fill_outcome(outcome, item)
        accepted, failed, uncertain = count_states(result.results)
        summary = response.summary
        summary.total = len(ids)
        summary.accepted = accepted
        summary.failed = failed
        summary.uncertain = uncertain
        summary.vendor_calls = 1
        await context.write(response)


async def serve(port: int, base_url: str, vendor: str, max_in_flight: int) -> None:
    # The gateway's own session settings (imgate.pipeline.backend.Backend.session), minus tracing.
    connector = aiohttp.TCPConnector(limit=max_in_flight, keepalive_timeout=15)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    ) as session:
        # The gateway's server options (imgate.api.server.Gateway).
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 << 20)]
        )
        # Only BatchSend is served: the other methods stay the generated UNIMPLEMENTED.
        servicer = MinimalGateway(session, base_url, vendor)  # type: ignore[abstract]
        pb_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
            raise OSError(f"cannot listen on port {port}")
        await server.start()
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True, help="the sandbox's base URL")
    parser.add_argument("--vendor", required=True, choices=sorted(BY_VENDOR))
    parser.add_argument("--max-in-flight", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.url, args.vendor, args.max_in_flight))


if __name__ == "__main__":
    main()
