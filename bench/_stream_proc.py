"""Floor 2: a grpc.aio server that only streams prebuilt outcome batches.

    python -m bench._stream_proc --port P

It serves the gateway's own `GatewayService` (same generated serialisers, same server
options) but its BatchSend ignores the request: it streams `bench-outcomes` outcomes
(call metadata) in messages of `bench-batch` outcomes each, with `context.write` as the
gateway does. The messages are built by the first call for an (outcomes, batch) pair and
reused, so a measured call costs only what any server streaming them must pay:
serialising and writing. Runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

# What a typical outcome carries: an 8-character id, an index, ACCEPTED, the vendor's
# message key (Tencent MsgKey "{MsgSeq}_{MsgRandom}_{time}") and one attempt.
MESSAGE_ID = "1234567890_2345678901_1700000000"


def outcome_messages(outcomes: int, batch: int) -> list[pb.BatchSendResponse]:
    """`outcomes` outcomes in messages of `batch`, then the summary message."""
    messages = []
    for start in range(0, outcomes, batch):
        messages.append(
            pb.BatchSendResponse(
                outcomes=[
                    pb.RecipientOutcome(
                        recipient_id=f"u{index:07d}",
                        index=index,
                        state=pb.DELIVERY_STATE_ACCEPTED,
                        vendor_message_id=MESSAGE_ID,
                        attempts=1,
                    )
                    for index in range(start, min(start + batch, outcomes))
                ]
            )
        )
    summary = pb.BatchSummary(total=outcomes, accepted=outcomes, vendor_calls=1)
    messages.append(pb.BatchSendResponse(summary=summary))
    return messages


class StreamFloor(pb_grpc.GatewayServiceServicer):
    """BatchSend streams prebuilt messages; nothing else."""

    def __init__(self) -> None:
        self._prebuilt: dict[tuple[int, int], list[pb.BatchSendResponse]] = {}

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListBackendsResponse:
        return pb.ListBackendsResponse()

    async def BatchSend(  # type: ignore[override]
        self, request: pb.BatchSendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        metadata = dict(context.invocation_metadata() or ())
        key = (int(metadata["bench-outcomes"]), int(metadata["bench-batch"]))
        messages = self._prebuilt.get(key)
        if messages is None:
            messages = self._prebuilt[key] = outcome_messages(*key)
        for message in messages:
            await context.write(message)


async def serve(port: int) -> None:
    # The gateway's server options (imgate.api.server.Gateway).
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 << 20)]
    )
    # The floor serves ListBackends and BatchSend; the generated base answers the rest
    # UNIMPLEMENTED, which its stub types declare abstract.
    floor = StreamFloor()  # type: ignore[abstract]
    pb_grpc.add_GatewayServiceServicer_to_server(floor, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on port {port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
