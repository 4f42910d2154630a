"""Stage 12, replicas: 3 gateways sharing one app's quota through Redis (quota use, refusals,
peak window), and one quota acquire's latency, Redis ÷ in-process."""

from __future__ import annotations

import contextlib
import statistics
import time

from bench._procs import BenchError, Gateway, RedisServer, Sandbox
from bench._report import Row, Target
from bench._stages.common import Plan, call_arrivals, progress, send_batch
from bench._workload import Backend, Quota, batch_request
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.registry import BY_VENDOR

_US = 1e6
_REPLICAS = 3
_REPLICAS_VENDOR = "yunxin_v1"
# The gateways' request_timeout_s: the shared quota's in-flight lease is this + 2 s, and a
# Redis without the app's state (this fresh one) pauses it for one window + that lease.
_REPLICA_TIMEOUT_S = 2.0
# Yunxin's 120 calls / 60 s scaled to 2 s windows (stage 5 uses 1 s): a slot is held from
# the grant to one window after the call's answer, and the vendor counts arrivals, so a
# call's own time (~50-100 ms for 500 recipients on this machine) costs that much quota per
# window; a longer window keeps that share small, as at the real 60 s.
_REPLICA_QUOTA = Quota(call_limit=20, call_window_s=2.0, block_s=2.0)


def replica_backends() -> list[Backend]:
    return [Backend(_REPLICAS_VENDOR, _REPLICA_QUOTA, request_timeout_s=_REPLICA_TIMEOUT_S)]


def replicas(plan: Plan) -> list[Row]:
    """Stage 12: three gateway processes with one `[quota] url` hammer one Yunxin app under
    its scaled quota (the sandbox enforces it); then one quota acquire's latency, Redis ÷
    the in-process limiter, in interleaved blocks."""
    vendor = _REPLICAS_VENDOR
    limit, window_s = _REPLICA_QUOTA.call_limit, _REPLICA_QUOTA.call_window_s
    per_call = BY_VENDOR[vendor].translator.spec.limits.recipients_per_call
    with contextlib.ExitStack() as stack:
        redis = RedisServer("redis-replicas")
        stack.callback(redis.stop)
        sandbox = Sandbox("sandbox-replicas", replica_backends())
        stack.callback(sandbox.stop)
        redis.wait_ready()
        sandbox.wait_ready()
        gateways = []
        for number in range(_REPLICAS):
            gateway = Gateway(
                f"gateway-replica-{number + 1}", sandbox, replica_backends(), quota_url=redis.url
            )
            stack.callback(gateway.stop)
            gateways.append(gateway)
        for gateway in gateways:
            gateway.wait_ready()
        progress("stage 12: warm-up (the fresh Redis pauses the app for one window + lease)")
        for gateway in gateways:
            send_batch(gateway, batch_request(vendor, per_call), 60)
        time.sleep(window_s + 0.2)  # an empty window to start from
        sandbox.reset()
        # Each call delivers 500: 8 windows (160 calls) stay within the 100,000 deliveries
        # the sandbox logs, which is where the arrival times are read from.
        windows = 6 if plan.quick else 8
        calls_each = limit * windows // _REPLICAS
        progress(f"stage 12: {_REPLICAS} replicas, {calls_each * _REPLICAS} calls")
        started = time.perf_counter()
        batches = []
        for number, gateway in enumerate(gateways):
            request = pb.SubmitBatchRequest(
                backend=vendor,
                sender_id=f"replica{number + 1}",
                recipient_ids=[f"r{number + 1}u{n:07d}" for n in range(calls_each * per_call)],
                message=pb.Message(text=pb.TextContent(text="imgate replicas")),
            )
            stub = pb_grpc.GatewayServiceStub(gateway.channel)
            batches.append((stub, stub.SubmitBatch(request, timeout=60).batch_id))
        for stub, batch_id in batches:
            _until_done(stub, batch_id, timeout_s=windows * window_s * 5 + 30)
        wall_s = time.perf_counter() - started
        stats = sandbox.stats(vendor)
        arrivals = _call_times(sandbox, vendor)
        latencies = _acquire_latencies(redis.url, 2_000 if plan.quick else 10_000)
    used = _quota_use(arrivals, limit, window_s)
    refusals = sum(stats["refusals"].values())
    peak = stats["peak_calls_in_window"]
    quota_text = f"{limit} calls / {window_s:g} s, {_REPLICAS} replicas, one Redis"
    data = {"calls": len(arrivals), "wall_s": wall_s, "stats": stats}
    percentiles = {
        side: (statistics.median(values), statistics.quantiles(values, n=100)[98])
        for side, values in latencies.items()
    }
    redis_p50, redis_p99 = percentiles["redis"]
    full_p50, full_p99 = percentiles["redis, 20,000 held"]
    local_p50, local_p99 = percentiles["in-process"]
    samples = len(latencies["redis"])
    return [
        Row(
            12,
            f"replicas ({vendor}): combined quota use ÷ limit",
            f"{quota_text}; {len(arrivals)} calls",
            f"window ÷ mean time from each call to the {limit}th after it = {used:.3f}",
            "1 (the limit, every window)",
            used,
            Target(">=", 0.95, 0.85, unit=""),
            data=data,
        ),
        Row(
            12,
            f"replicas ({vendor}): vendor rate-limit refusals",
            quota_text,
            f"{refusals} refusals ({stats['refusals'] or 'none'})",
            "-",
            refusals,
            Target("<=", 0, 0, unit=""),
        ),
        Row(
            12,
            f"replicas ({vendor}): highest count in any window ÷ limit",
            quota_text,
            f"{peak} calls (sandbox peak)",
            f"{limit} calls",
            peak / limit,
            Target("<=", 1, 1, unit=""),
        ),
        Row(
            12,
            "one quota acquire + release, p50: Redis ÷ in-process",
            f"{samples:,} acquires each, interleaved blocks, nothing waiting",
            f"Redis {redis_p50 * _US:.0f} µs (p99 {redis_p99 * _US:.0f} µs)",
            f"in-process {local_p50 * _US:.1f} µs (p99 {local_p99 * _US:.1f} µs)",
            redis_p50 / local_p50,
            data={
                "p50_s": {k: v[0] for k, v in percentiles.items()},
                "p99_s": {k: v[1] for k, v in percentiles.items()},
            },
        ),
        Row(
            12,
            "one quota acquire + release, p50: 20,000 entries in the window ÷ few",
            f"{samples:,} acquires each, interleaved blocks; 20,000 ended calls in the"
            " window (written with ZADD)",
            f"20,000 held {full_p50 * _US:.0f} µs (p99 {full_p99 * _US:.0f} µs)",
            f"few held {redis_p50 * _US:.0f} µs (p99 {redis_p99 * _US:.0f} µs)",
            full_p50 / redis_p50,
        ),
    ]


def _until_done(stub: pb_grpc.GatewayServiceStub, batch_id: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)
        if batch.state == pb.BATCH_STATE_DONE:
            if batch.accepted != batch.total:
                raise BenchError(f"stage 12: batch {batch_id} ended {batch}")
            return
        time.sleep(0.05)
    raise BenchError(f"stage 12: batch {batch_id} did not end in {timeout_s:.0f} s")


def _call_times(sandbox: Sandbox, vendor: str) -> list[float]:
    """When each processed call reached the sandbox (its first delivery), sorted."""
    return [arrival for arrival, _ in call_arrivals(sandbox, vendor)]


def _quota_use(arrivals: list[float], limit: int, window_s: float) -> float:
    """window ÷ the mean time from each call to the `limit`-th after it: a quota used in
    full sends call i + limit exactly one window after call i, whatever the bursts."""
    spans = [later - first for first, later in zip(arrivals, arrivals[limit:], strict=False)]
    if len(spans) < limit:
        raise BenchError(f"stage 12: only {len(arrivals)} calls to judge")
    return window_s / statistics.fmean(spans)


def _acquire_latencies(redis_url: str, count: int) -> dict[str, list[float]]:
    """Seconds per acquire + release with room to spare: in process, Redis, and Redis with
    20,000 entries in the window (the running sum keeps it O(log n))."""
    import asyncio
    import dataclasses

    import redis.asyncio

    from imgate.config.load import sandbox_config
    from imgate.config.model import BackendConfig
    from imgate.config.redaction import Secrets
    from imgate.quota.limiter import BackendLimiter, Limiter
    from imgate.quota.redis import RedisQuota, RedisWindows

    base = sandbox_config("http://127.0.0.1:9").backend(_REPLICAS_VENDOR)
    assert base is not None

    def app(name: str) -> BackendConfig:
        return dataclasses.replace(
            base,
            credentials=Secrets({"app_key": name, "app_secret": "unused"}),
            call_limit=1_000_000_000,
            call_window_s=1.0,
            request_timeout_s=0.1,
        )

    async def measure() -> dict[str, list[float]]:
        shared = RedisQuota(redis_url, key_prefix="bench-latency")
        limiters: dict[str, Limiter] = {
            "in-process": BackendLimiter(1_000_000_000, 1.0, 0, 1.0),
            "redis": shared.limiter(app("bench-latency-app")),
            "redis, 20,000 held": shared.limiter(app("bench-latency-full")),
        }
        for side in ("redis", "redis, 20,000 held"):  # wait out the fresh-state pauses
            (await limiters[side].acquire(1)).release()
        full = limiters["redis, 20,000 held"].windows
        assert isinstance(full, RedisWindows)
        # 20,000 ended calls counting for the next hour, written straight into the app's
        # sorted set and running sum (made by takes, they would need an hour-long window,
        # and a fresh Redis pauses an app for a window).
        filler = redis.asyncio.Redis.from_url(redis_url)
        until_us = (time.time() + 3600) * 1_000_000
        zset, total = full.keys[3], full.keys[4]
        for start in range(0, 20_000, 1_000):
            members = {f"e:fill.{n}:1": until_us for n in range(start, start + 1_000)}
            await filler.zadd(zset, members)
        await filler.incrby(total, 20_000)
        await filler.aclose()
        samples: dict[str, list[float]] = {side: [] for side in limiters}
        block = 250
        for number in range(count // block):
            sides = list(limiters) if number % 2 == 0 else list(reversed(limiters))
            for side in sides:
                limiter = limiters[side]
                for _ in range(block):
                    started = time.perf_counter()
                    (await limiter.acquire(1)).release()
                    samples[side].append(time.perf_counter() - started)
        held = full.usage()[0][1]
        await shared.close()
        if held < 20_000:
            raise BenchError(f"stage 12: the full window held {held} entries, not 20,000")
        return samples

    progress(f"stage 12: quota acquire latency, {count:,} each")
    return asyncio.run(measure())
