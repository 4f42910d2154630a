"""Vendor requests sent straight to the sandbox: floor 1, stage 6 and stage 7's loop.

    python -m bench._http_client --url http://127.0.0.1:P --vendor tencent --concurrency 8

Each call is built by the vendor's translator from the chunks the gateway would plan, so
the bytes are the gateway's (bodies, fresh signatures); calls go over one keep-alive
aiohttp session with `--concurrency` in flight, and only the HTTP status of each answer is
checked.

Stage 7's loop (`{"recipients": N, "backoff_s": S}`, with `--concurrency 1`) is what a team
would write without imgate: one chunk after the other, each answer parsed by the
translator, and a chunk refused for rate (Yunxin 416, Tencent 60007) sent again
after sleeping `S` seconds (the vendor's documented window or block, scaled like the
sandbox's). Its answer adds `refusals`: how many calls the vendor refused for rate.

The process serves rounds so that the driver can interleave them with gateway batches
(both then see the same machine): each stdin line `{"recipients": N}` sends one batch of
N and answers one stdout line of JSON: calls, wall_s, cpu_s (this process, sending only),
HTTP statuses and each call's latency. It exits at the end of stdin.
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
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp

from bench._workload import REQUEST_TIMEOUT_S, WARM_RECIPIENTS, batch_request
from imgate.pipeline.planner import plan_chunks
from imgate.vendors.base.translator import Disposition, Translator, VendorRequest
from imgate.vendors.registry import BY_VENDOR

_Chunks = Iterator[tuple[int, Sequence[str]]]


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_call(
    session: aiohttp.ClientSession, base_url: str, call: VendorRequest
) -> tuple[int, bytes]:
    """One built vendor call sent as the gateway sends it (base_url + the request's path):
    the answer's (status, body)."""
    async with session.request(
        call.method, base_url + call.path, params=call.query, headers=call.headers, data=call.body
    ) as answer:
        return answer.status, await answer.read()


class VendorClient:
    """Sends batches to one vendor endpoint as the gateway would, minus the gateway."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, vendor: str, concurrency: int
    ) -> None:
        translator_type = BY_VENDOR[vendor].translator
        self.translator: Translator = translator_type(translator_type.spec.sandbox_credentials)
        self.session = session
        self.base_url = base_url
        self.vendor = vendor
        self.concurrency = concurrency

    async def send(self, recipients: int, backoff_s: float | None = None) -> dict[str, Any]:
        """One batch of `recipients`; the measurements as JSON. With `backoff_s`, answers
        are parsed and rate refusals slept out and sent again (stage 7)."""
        translator = self.translator
        request = batch_request(self.vendor, recipients)
        prepared = translator.prepare(request)
        per_call = translator.recipients_per_call(
            prepared, translator.spec.limits.recipients_per_call
        )
        ids = list(request.recipient_ids)
        sizes = plan_chunks(translator, prepared, ids, per_call)
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        chunks = _chunked(ids, sizes)
        refusals: list[int] = []
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        if backoff_s is None:
            await asyncio.gather(
                *(
                    self._worker(prepared, chunks, statuses, latencies)
                    for _ in range(self.concurrency)
                )
            )
        else:
            await self._sleep_out(prepared, chunks, statuses, latencies, backoff_s, refusals)
        wall_s, cpu_s = time.perf_counter() - wall_before, cpu_seconds() - cpu_before
        return {
            "vendor": self.vendor,
            "recipients": recipients,
            "calls": len(sizes),
            "concurrency": self.concurrency,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "statuses": {str(status): count for status, count in statuses.items()},
            "latencies_s": latencies,
            "refusals": len(refusals),
        }

    async def _worker(
        self, prepared: Any, chunks: _Chunks, statuses: Counter[int], latencies: list[float]
    ) -> None:
        batch_key = uuid.uuid4().hex
        for number, chunk in chunks:
            await self._call(prepared, chunk, f"{batch_key}:{number}", statuses, latencies)

    async def _call(
        self,
        prepared: Any,
        chunk: Sequence[str],
        key: str,
        statuses: Counter[int],
        latencies: list[float],
    ) -> tuple[int, bytes]:
        """One vendor call, built as the gateway would (fresh signature); its status and
        latency are counted, its (status, body) returned."""
        call = self.translator.build(prepared, chunk, key, time.time(), secrets.token_hex(16))
        started = time.perf_counter()
        status, body = await send_call(self.session, self.base_url, call)
        statuses[status] += 1
        latencies.append(time.perf_counter() - started)
        return status, body

    async def _sleep_out(
        self,
        prepared: Any,
        chunks: _Chunks,
        statuses: Counter[int],
        latencies: list[float],
        backoff_s: float,
        refusals: list[int],
    ) -> None:
        """One call at a time; a call refused for rate is sent again after `backoff_s`."""
        batch_key = uuid.uuid4().hex
        for number, chunk in chunks:
            while True:
                status, body = await self._call(
                    prepared, chunk, f"{batch_key}:{number}", statuses, latencies
                )
                result = self.translator.parse(chunk, status, body)
                if result.disposition is Disposition.RATE_LIMITED:
                    refusals.append(number)
                    await asyncio.sleep(backoff_s)
                    continue
                if result.disposition is not Disposition.DONE:
                    raise RuntimeError(f"call {number}: {result.disposition} {result.detail}")
                break


def _chunked(recipients: Sequence[str], sizes: Sequence[int]) -> _Chunks:
    start = 0
    for number, size in enumerate(sizes):
        yield number, recipients[start : start + size]
        start += size


async def serve(base_url: str, vendor: str, concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        skip_auto_headers=("User-Agent",),
    ) as session:
        client = VendorClient(session, base_url, vendor, concurrency)
        # Warm up, untimed, as the gateway is: open connections, take every code path once.
        await client.send(WARM_RECIPIENTS)
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            order = json.loads(line)
            result = await client.send(int(order["recipients"]), order.get("backoff_s"))
            print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the sandbox's base URL")
    parser.add_argument("--vendor", required=True, choices=sorted(BY_VENDOR))
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.vendor, args.concurrency))


if __name__ == "__main__":
    main()
