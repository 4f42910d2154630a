"""Stage 14's callers: many of them, each sending one small request after the other.

    python -m bench._platform_load --vendor tencent

A closed loop: `callers` tasks share a count of `requests`; each takes the next number,
sends that request, waits for its whole answer, and takes the next. Each stdin line is
one run and answers one stdout line of JSON (requests, wall_s, cpu_s of this process,
each request's latency and the time it ended from the run's start, failures):

    {"kind": "grpc", "target": "127.0.0.1:P", "recipients": 1, "callers": 64, "requests": 2000}
        BatchSend to a gateway, read to its summary (every recipient must be ACCEPTED);
    {"kind": "direct", "url": "http://127.0.0.1:S", ...}
        the same vendor call straight to the sandbox with aiohttp, as a platform service
        would make it without a gateway: built and signed by imgate's translator, one
        POST, the answer parsed by the translator (every recipient must be accepted).

Request number n names recipients n*r .. n*r+r-1 (r = recipients), so no two requests of
a run name the same account. One gRPC channel per target and one aiohttp session per
sandbox, kept for the whole process: runs after the first find them warm. Exits at the
end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc

from bench._http_client import send_call
from bench._workload import REQUEST_TIMEOUT_S, SENDER, TEXT
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.base.translator import Disposition, Translator, count_states
from imgate.vendors.registry import BY_VENDOR

_MAX_CONNECTIONS = 1024
"""The direct client's aiohttp pool: above any run's callers, so callers never queue."""
_IDS = 10_000_000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def request_for(backend: str, number: int, recipients: int) -> pb.BatchSendRequest:
    first = number * recipients
    return pb.BatchSendRequest(
        backend=backend,
        sender_id=SENDER,
        recipient_ids=[f"u{(first + k) % _IDS:07d}" for k in range(recipients)],
        message=pb.Message(text=pb.TextContent(text=TEXT)),
    )


class Callers:
    """The process's channels and session, and the runs sent through them."""

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        translator_type = BY_VENDOR[vendor].translator
        self.translator: Translator = translator_type(translator_type.spec.sandbox_credentials)
        self._stubs: dict[str, pb_grpc.GatewayServiceAsyncStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(grace=None)
        if self._session is not None:
            await self._session.close()

    def _stub(self, target: str) -> pb_grpc.GatewayServiceAsyncStub:
        stub = self._stubs.get(target)
        if stub is None:
            channel = grpc.aio.insecure_channel(target)
            self._channels.append(channel)
            stub = self._stubs[target] = pb_grpc.GatewayServiceStub(channel)
        return stub

    def _direct_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, keepalive_timeout=15),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            )
        return self._session

    async def run(self, order: dict[str, Any]) -> dict[str, Any]:
        recipients = int(order["recipients"])
        callers = int(order["callers"])
        total = int(order["requests"])
        if order["kind"] == "grpc":
            send = self._grpc_sender(order["target"], recipients)
        else:
            send = self._direct_sender(order["url"], recipients)
        taken = 0
        latencies: list[float] = []
        ends: list[float] = []
        failures: list[str] = []
        wall_before = 0.0

        async def caller() -> None:
            nonlocal taken
            while taken < total:
                number = taken
                taken += 1
                started = time.perf_counter()
                try:
                    problem = await send(number)
                except (grpc.RpcError, aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    failures.append(problem)
                else:
                    ended = time.perf_counter()
                    latencies.append(ended - started)
                    ends.append(ended - wall_before)

        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return {
            "requests": total,
            "wall_s": time.perf_counter() - wall_before,
            "cpu_s": cpu_seconds() - cpu_before,
            "latencies_s": [round(latency, 6) for latency in latencies],
            "ends_s": [round(end, 6) for end in ends],
            "failures": len(failures),
            "first_failure": failures[0] if failures else "",
        }

    def _grpc_sender(self, target: str, recipients: int) -> Callable[[int], Awaitable[str]]:
        stub = self._stub(target)
        backend = self.vendor

        async def send(number: int) -> str:
            request = request_for(backend, number, recipients)
            summary = None
            outcomes = 0
            async for message in stub.BatchSend(request, timeout=REQUEST_TIMEOUT_S):
                outcomes += len(message.outcomes)
                if message.HasField("summary"):
                    summary = message.summary
            if summary is None or outcomes != recipients or summary.accepted != recipients:
                return f"{outcomes} outcomes, summary {summary}"
            return ""

        return send

    def _direct_sender(self, base_url: str, recipients: int) -> Callable[[int], Awaitable[str]]:
        session = self._direct_session()
        translator = self.translator
        backend = self.vendor

        async def send(number: int) -> str:
            request = request_for(backend, number, recipients)
            ids = list(request.recipient_ids)
            prepared = translator.prepare(request)
            call = translator.build(
                prepared, ids, uuid.uuid4().hex, time.time(), secrets.token_hex(16)
            )
            status, body = await send_call(session, base_url, call)
            result = translator.parse(ids, status, body)
            if result.disposition is not Disposition.DONE:
                return f"HTTP {status}: {result.disposition.value} {result.detail}"
            accepted = count_states(result.results)[0]
            return "" if accepted == recipients else f"{accepted} of {recipients} accepted"

        return send


async def serve(vendor: str) -> None:
    callers = Callers(vendor)
    try:
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(await callers.run(json.loads(line))), flush=True)
    finally:
        await callers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vendor", required=True, choices=sorted(BY_VENDOR))
    asyncio.run(serve(parser.parse_args().vendor))


if __name__ == "__main__":
    main()
