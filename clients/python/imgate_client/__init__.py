"""imgate_client: Python client of the imgate gateway (sync and asyncio).

    from imgate_client import GatewayClient, state_name, text

    with GatewayClient("127.0.0.1:50051") as client:
        stream = client.batch_send(["alice", "bob"], text("hi"), sender_id="ops")
        for outcome in stream:
            print(outcome.recipient_id, state_name(outcome.state))
        print(stream.summary)

Messages are the generated ``imgate.v1.gateway_pb2`` types, re-exported here as
``gateway_pb2``.
"""

from imgate.v1 import gateway_pb2

from ._async_client import AsyncGatewayClient
from ._content import JsonObject, audio, custom, file, image, location, text, tip, video
from ._enums import ACCEPTED, FAILED, UNCERTAIN, backend_state_name, reason_name, state_name
from ._errors import FieldViolation, GatewayError, InvalidRequestError
from ._request import Metadata, SendOptionFields
from ._stream import AsyncBatchStream, BatchResult, BatchStream
from ._sync_client import GatewayClient

__all__ = [
    "ACCEPTED",
    "FAILED",
    "UNCERTAIN",
    "AsyncBatchStream",
    "AsyncGatewayClient",
    "BatchResult",
    "BatchStream",
    "FieldViolation",
    "GatewayClient",
    "GatewayError",
    "InvalidRequestError",
    "JsonObject",
    "Metadata",
    "SendOptionFields",
    "audio",
    "backend_state_name",
    "custom",
    "file",
    "gateway_pb2",
    "image",
    "location",
    "reason_name",
    "state_name",
    "text",
    "tip",
    "video",
]
