"""The shared (Redis) quota windows against the in-process ones and a plain model.

A real `redis-server` per module (tests/_redis.py). Most tests pass the script an
explicit `now` (microseconds) so that schedules are exact and repeatable; production
always uses Redis' TIME, which `test_the_server_clock_is_used_without_now` covers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.api import server as _server
from imgate.config.model import BackendConfig
from imgate.config.redaction import Secrets
from imgate.observability.metrics import Metrics
from imgate.quota.limiter import LocalWindows, QuotaWaitTooLong
from imgate.quota.redis import LEASE_MARGIN_S, RETRY_S, RedisQuota, RedisWindows
from tests._redis import RedisServer
from tests.conftest import StartGateway

US = 1_000_000
T0 = 1_800_000_000 * US  # a fixed "now" far from the real clock: only the script's view


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
async def quota(redis_server: RedisServer) -> AsyncIterator[RedisQuota]:
    if redis_server.process is None:
        redis_server.start()
    quota = RedisQuota(redis_server.url, key_prefix="test")
    yield quota
    await quota.close()


_apps = iter(range(1_400_000_001, 1_500_000_000))


def _backend(
    call_limit: int,
    call_window_s: float,
    recipient_limit: int = 0,
    recipient_window_s: float = 1.0,
    request_timeout_s: float = 10.0,
    app: int | None = None,
    name: str = "tx",
) -> BackendConfig:
    """A Tencent backend on its own app (fresh keys) unless `app` is given."""
    return BackendConfig(
        name=name,
        vendor="tencent",
        base_url="http://127.0.0.1:9",
        credentials=Secrets(
            {
                "sdk_app_id": next(_apps) if app is None else app,
                "secret_key": "not-used",
                "admin_identifier": "administrator",
            }
        ),
        recipients_per_call=500,
        call_limit=call_limit,
        call_window_s=call_window_s,
        recipient_limit=recipient_limit,
        recipient_window_s=recipient_window_s,
        block_s=1.0,
        request_timeout_s=request_timeout_s,
    )


def _pause_us(config: BackendConfig) -> int:
    """How long a Redis without the app's state pauses it: longest window + lease."""
    windows = [config.call_window_s] + ([config.recipient_window_s] * bool(config.recipient_limit))
    return round((max(windows) + config.request_timeout_s + LEASE_MARGIN_S) * US)


async def _fresh(quota: RedisQuota, config: BackendConfig) -> tuple[RedisWindows, int]:
    """The app's windows, past the pause a Redis without its state starts with; the
    first `now` at which it may send."""
    windows = RedisWindows(quota, config)
    first = await windows.take(1, now_us=T0)
    assert not first.granted
    assert first.exact
    assert first.wait_s == pytest.approx(_pause_us(config) / US)
    return windows, T0 + _pause_us(config)


@dataclass
class _Entry:
    amounts: list[int]
    taken_at: int
    ended_at: int | None = None


class _Model:
    """What the vendor's windows allow, written as plainly as possible."""

    def __init__(self, limits: list[int], windows_us: list[int], lease_us: int) -> None:
        self.limits, self.windows_us, self.lease_us = limits, windows_us, lease_us
        self.entries: list[_Entry] = []
        self.blocked_until = 0

    def held(self, window: int, now: int) -> int:
        total = 0
        for entry in self.entries:
            if entry.ended_at is None:
                counts_until = entry.taken_at + self.lease_us + self.windows_us[window]
            else:
                counts_until = entry.ended_at + self.windows_us[window]
            if now < counts_until:
                total += entry.amounts[window]
        return total

    def fits(self, amounts: list[int], now: int) -> bool:
        if now < self.blocked_until:
            return False
        return all(
            self.held(w, now) + amount <= limit
            for w, (amount, limit) in enumerate(zip(amounts, self.limits, strict=True))
        )


async def test_lua_and_in_process_windows_grant_alike_on_random_schedules(
    quota: RedisQuota,
) -> None:
    """Same random schedules (takes, ends, blocks; calls ending within their lease) into
    the Lua script, the in-process windows and the model: the same grants, and never
    more than a limit held; where the in-process wait is known, the same wait."""
    rng = random.Random(9)
    checked = granted = 0
    for _ in range(120):
        call_window_ms = rng.choice([200, 1000, 3000])
        recipient_limit = rng.choice([0, 0, 10, 40])
        config = _backend(
            call_limit=rng.randint(1, 6),
            call_window_s=call_window_ms / 1000,
            recipient_limit=recipient_limit,
            recipient_window_s=rng.choice([500, 2000]) / 1000,
            request_timeout_s=100.0,  # no call of a schedule outlives its lease
        )
        windows, now = await _fresh(quota, config)
        clock = [now]
        # The in-process windows on the same integer microsecond clock: exact arithmetic.
        local = LocalWindows(
            config.call_limit,
            config.call_window_s * US,
            config.recipient_limit,
            config.recipient_window_s * US,
            clock=lambda clock=clock: clock[0],
        )
        limits = [config.call_limit] + ([recipient_limit] if recipient_limit else [])
        windows_us = [round(config.call_window_s * US)]
        if recipient_limit:
            windows_us.append(round(config.recipient_window_s * US))
        model = _Model(limits, windows_us, round(windows.lease_s * US))
        held: list[tuple[str, list[int], _Entry]] = []
        known_wait: float | None = None
        for _ in range(50):
            step = rng.random()
            if step < 0.25 and known_wait is not None:
                # Exactly when the last refused take would fit: the boundary.
                now += round(known_wait)
            elif step < 0.35:
                now += 0
            else:
                now += rng.randint(0, max(windows_us) // 2)
            known_wait = None
            clock[0] = now
            action = rng.random()
            if action < 0.97 and (action < 0.45 or not held):
                recipients = rng.choice([1, 3, 12, 45]) if recipient_limit else 1
                amounts = windows.amounts(recipients)
                expected = model.fits(amounts, now)
                lua = await windows.take(recipients, now_us=now)
                in_process = local.take_now(recipients)
                assert lua.granted == expected == in_process.granted, (now, amounts)
                checked += 1
                if expected:
                    granted += 1
                    entry = _Entry(amounts, now)
                    model.entries.append(entry)
                    held.append((lua.token, in_process.token, entry))
                    for w, limit in enumerate(limits):
                        assert model.held(w, now) <= limit
                elif in_process.wait_s is not None:
                    known_wait = in_process.wait_s
                    assert lua.exact
                    assert lua.wait_s == pytest.approx(in_process.wait_s / US, abs=1e-6)
            elif action < 0.97:
                lua_token, local_token, entry = held.pop(rng.randrange(len(held)))
                await windows.end(lua_token, now_us=now)
                local.give_back(local_token)
                entry.ended_at = now
            else:
                block_us = rng.randint(1, 2 * max(windows_us))
                await windows.block_shared(block_us / US, now_us=now)
                local.block(block_us)
                model.blocked_until = max(model.blocked_until, now + block_us)
        await windows.close()
    assert checked > 2000
    assert 0.15 < granted / checked < 0.85  # schedules that both grant and refuse


async def test_a_killed_replicas_entries_lapse_after_lease_and_window(quota: RedisQuota) -> None:
    """A grant never ended (its replica died) holds its slot for lease + window, no longer."""
    config = _backend(call_limit=1, call_window_s=1.0, request_timeout_s=3.0)
    windows, now = await _fresh(quota, config)
    lease_us = round(windows.lease_s * US)
    assert (await windows.take(1, now_us=now)).granted
    still = await windows.take(1, now_us=now + lease_us + US - 1)
    assert not still.granted
    assert not still.exact  # the in-flight call may end earlier and free it sooner
    assert (await windows.take(1, now_us=now + lease_us + US)).granted
    await windows.close()


async def test_two_backends_on_one_app_share_its_quota(quota: RedisQuota) -> None:
    app = next(_apps)
    first = RedisWindows(quota, _backend(2, 1.0, app=app, name="a"))
    second = RedisWindows(quota, _backend(2, 1.0, app=app, name="b"))
    other = RedisWindows(quota, _backend(2, 1.0, name="c"))  # another app
    assert not (await first.take(1, now_us=T0)).granted  # the fresh-state pause
    now = T0 + _pause_us(_backend(2, 1.0))
    assert (await first.take(1, now_us=now)).granted
    assert (await second.take(1, now_us=now)).granted
    assert not (await first.take(1, now_us=now)).granted
    assert not (await second.take(1, now_us=now)).granted
    await other.take(1, now_us=T0)
    assert (await other.take(1, now_us=now)).granted
    for windows in (first, second, other):
        await windows.close()


async def test_one_replicas_block_pauses_every_replica(redis_server: RedisServer) -> None:
    replicas = [RedisQuota(redis_server.url, key_prefix="test") for _ in range(2)]
    app = next(_apps)
    config = _backend(100, 1.0, app=app)
    windows = [quota_.limiter(config).windows for quota_ in replicas]
    assert isinstance(windows[0], RedisWindows)
    assert isinstance(windows[1], RedisWindows)
    await windows[0].take(1, now_us=T0)
    now = T0 + _pause_us(config)
    await windows[0].block_shared(5.0, now_us=now)
    refused = await windows[1].take(1, now_us=now + 4 * US)
    assert not refused.granted
    assert refused.exact
    assert refused.wait_s == pytest.approx(1.0)
    assert windows[1].blocked_until > 0  # the metrics see the pause on the other replica
    assert (await windows[1].take(1, now_us=now + 5 * US)).granted
    for replica in replicas:
        await replica.close()


async def test_lost_state_pauses_the_app_for_one_window_and_lease(
    quota: RedisQuota, redis_server: RedisServer
) -> None:
    config = _backend(call_limit=5, call_window_s=2.0, request_timeout_s=3.0)
    windows, now = await _fresh(quota, config)
    assert (await windows.take(1, now_us=now)).granted
    redis_server.flush()
    later = now + US
    paused = await windows.take(1, now_us=later)
    assert not paused.granted
    assert paused.wait_s == pytest.approx(_pause_us(config) / US)
    assert not (await windows.take(1, now_us=later + _pause_us(config) - 1)).granted
    assert (await windows.take(1, now_us=later + _pause_us(config))).granted
    await windows.close()


async def test_the_server_clock_is_used_without_now(quota: RedisQuota) -> None:
    """Production passes no `now`: Redis' TIME decides, and the fresh-state pause holds."""
    config = _backend(call_limit=1, call_window_s=0.2, request_timeout_s=0.1)
    windows = RedisWindows(quota, config)
    first = await windows.take(1)
    assert not first.granted
    assert first.wait_s == pytest.approx(0.2 + 0.1 + LEASE_MARGIN_S, abs=0.05)
    await windows.close()


async def test_fail_closed_while_redis_is_down_then_resume(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: nothing is granted, a waiter with a deadline gives up at it, one without
    keeps waiting; Redis back: the waiter is granted (after the fresh-state pause)."""
    quota = RedisQuota(
        redis_server.url.replace("redis://", "redis://:s3cret-pw@"), key_prefix="test"
    )
    config = _backend(call_limit=10, call_window_s=0.1, request_timeout_s=0.1)
    limiter = quota.limiter(config)
    metrics = Metrics()
    metrics.watch({}, lambda: quota.reachable)
    try:
        redis_server.stop()
        loop = asyncio.get_running_loop()
        with pytest.raises(QuotaWaitTooLong):
            await limiter.acquire(1, loop.time() + 3 * RETRY_S)
        assert b"imgate_quota_store_up 0.0" in metrics.exposition()
        waiter = asyncio.ensure_future(limiter.acquire(1))
        await asyncio.sleep(2 * RETRY_S)
        assert not waiter.done()
        redis_server.start()
        grant = await asyncio.wait_for(waiter, 10)
        grant.release()
        assert b"imgate_quota_store_up 1.0" in metrics.exposition()
    finally:
        if redis_server.process is None:
            redis_server.start()
        await quota.close()
    text = caplog.text
    assert "unreachable" in text
    assert "reachable again" in text
    assert "s3cret-pw" not in text


def test_quota_url_errors_name_the_key_and_hide_the_password() -> None:
    from imgate.config.errors import ConfigError
    from imgate.config.load import parse_config

    backend = {
        "vendor": "tencent",
        "base_url": "http://127.0.0.1:9",
        "sdk_app_id": 1,
        "secret_key": "s",
        "admin_identifier": "a",
    }
    good = parse_config({"backends": {"tx": backend}, "quota": {"url": "redis://:pw@h:6379/0"}}, {})
    assert good.quota_url == "redis://:pw@h:6379/0"
    assert good.quota_key_prefix == "imgate"
    for url in ("http://:hunter2@h:6379", "redis://:hunter2@h:99999/0", "redis://:hunter2@h/x"):
        with pytest.raises(ConfigError) as caught:
            parse_config({"backends": {"tx": backend}, "quota": {"url": url}}, {})
        assert caught.value.key == "quota.url"
        assert "hunter2" not in str(caught.value)
        assert "***" in str(caught.value)


async def test_this_replicas_block_holds_before_redis_has_it(quota: RedisQuota) -> None:
    config = _backend(call_limit=100, call_window_s=1.0)
    windows, now = await _fresh(quota, config)
    windows.block(30.0)  # sent to Redis in the background
    refused = await windows.take(1, now_us=now)
    assert not refused.granted
    assert refused.wait_s is not None
    assert refused.wait_s > 29
    await windows.close()


@pytest.mark.slow
async def test_a_held_grant_is_renewed_past_its_lease(redis_server: RedisServer) -> None:
    """A grant waiting for an in-flight permit may outlive its lease: its replica renews
    it, so another replica gets no room until it ended and one window passed."""
    replicas = [RedisQuota(redis_server.url, key_prefix="test") for _ in range(2)]
    config = _backend(call_limit=1, call_window_s=0.3, request_timeout_s=0.1)
    holder, other = (replica.limiter(config) for replica in replicas)
    loop = asyncio.get_running_loop()
    grant = await holder.acquire(1, loop.time() + 10)  # after the fresh-state pause
    lease_s = config.request_timeout_s + LEASE_MARGIN_S
    held_until = loop.time() + lease_s + config.call_window_s + 0.5
    with pytest.raises(QuotaWaitTooLong):
        await other.acquire(1, held_until)
    grant.release()
    await asyncio.sleep(0.2)  # the end reaches Redis
    again = await other.acquire(1, loop.time() + 5)
    again.release()
    for replica in replicas:
        await replica.close()


async def test_a_task_cancelled_amid_its_redis_calls_stops(quota: RedisQuota) -> None:
    """cancel() ends a task that takes and gives back grants in a loop, whatever Redis call
    it is in. With redis-py 8.2 awaited directly, a task cancelled mid-command went on (or
    waited for ever) at the first of these rounds; a batch run that would not stop."""
    config = _backend(call_limit=1_000_000, call_window_s=0.1, request_timeout_s=0.1)
    limiter = quota.limiter(config)
    loop = asyncio.get_running_loop()
    (await limiter.acquire(1, loop.time() + 10)).release()  # the fresh-state pause
    rng = random.Random(7)

    async def spin() -> None:
        while True:
            (await limiter.acquire(1)).release()

    for _ in range(30):
        tasks = [asyncio.create_task(spin()) for _ in range(8)]
        await asyncio.sleep(rng.uniform(0.001, 0.02))
        for task in tasks:
            task.cancel()
        _, running = await asyncio.wait(tasks, timeout=5)
        assert not running, "a cancelled task went on"
        assert all(task.cancelled() for task in tasks)
    assert await quota.ping()  # and the client still works


@pytest.mark.slow
async def test_callers_keep_their_weighted_share_in_front_of_the_shared_windows(
    quota: RedisQuota,
) -> None:
    """The fair queue stays in process: heavy (weight 3) and light (1), four batches each,
    share one replica's grants 3:1 while the windows are Redis'."""
    config = _backend(call_limit=20, call_window_s=0.1, request_timeout_s=0.1)
    limiter = quota.limiter(config)
    loop = asyncio.get_running_loop()
    (await limiter.acquire(1, loop.time() + 10)).release()  # the fresh-state pause
    await asyncio.sleep(config.call_window_s)
    log: list[str] = []

    async def saturate(caller: str, weight: int) -> None:
        while True:
            grant = await limiter.acquire(1, caller=caller, weight=weight)
            log.append(caller)
            grant.release()

    tasks = [
        asyncio.create_task(saturate(caller, weight))
        for caller, weight in (("heavy", 3), ("light", 1))
        for _ in range(4)
    ]
    await asyncio.sleep(1.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    counts = Counter(log[20:])  # after the first, uncontended window
    assert sum(counts.values()) >= 60
    share = counts["heavy"] / (counts["heavy"] + counts["light"])
    assert 0.7 <= share <= 0.8, counts


async def test_health_is_not_serving_while_the_shared_quota_is_unreachable(
    redis_server: RedisServer,
    start_gateway: StartGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With [quota], a replica that cannot reach Redis sends nothing (fail closed), so its
    health says NOT_SERVING until Redis answers again."""
    monkeypatch.setattr(_server, "QUOTA_HEALTH_EVERY_S", 0.1)
    if redis_server.process is None:
        redis_server.start()
    gateway = await start_gateway(quota_url=redis_server.url, quota_key_prefix="health")
    health = health_pb2_grpc.HealthStub(gateway.channel)

    async def status_within(expected: int, seconds: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == expected or loop.time() > deadline:
                return int(reply.status)
            await asyncio.sleep(0.05)

    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await status_within(serving, 5) == serving
    redis_server.stop()
    try:
        assert await status_within(not_serving, 5) == not_serving
    finally:
        redis_server.start()
    assert await status_within(serving, 5) == serving


async def test_lost_state_pauses_for_the_store_lease_when_it_is_longer(
    redis_server: RedisServer,
) -> None:
    """Rule 16: one window plus `[store] lease_s`, when that lease is the longer one."""
    if redis_server.process is None:
        redis_server.start()
    config = _backend(2, 1.0)
    store_lease_s = config.request_timeout_s + LEASE_MARGIN_S + 5.0
    quota = RedisQuota(redis_server.url, key_prefix="storelease", state_loss_lease_s=store_lease_s)
    try:
        windows = RedisWindows(quota, config)
        first = await windows.take(1, now_us=T0)
        assert not first.granted
        assert first.wait_s == pytest.approx(1.0 + store_lease_s)
        pause_us = round((1.0 + store_lease_s) * US)
        assert not (await windows.take(1, now_us=T0 + pause_us - 1)).granted
        assert (await windows.take(1, now_us=T0 + pause_us)).granted
    finally:
        await quota.close()


async def test_the_recall_api_has_a_shared_quota_of_its_own(quota: RedisQuota) -> None:
    app = next(_apps)
    config = dataclasses.replace(
        _backend(2, 1.0, app=app), recallable=True, recall_call_limit=1, recall_call_window_s=1.0
    )
    send = RedisWindows(quota, config)
    recall = RedisWindows(quota, config, "recall")
    other_replica = RedisWindows(quota, config, "recall")
    assert recall.app == f"tencent:{app}:recall" != send.app
    await send.take(1, now_us=T0)  # the fresh-state pause, of each
    await recall.take(1, now_us=T0)
    now = T0 + _pause_us(config)
    assert (await recall.take(1, now_us=now)).granted
    assert not (await other_replica.take(1, now_us=now)).granted  # one call a second, shared
    assert (await send.take(1, now_us=now)).granted  # sends count apart
    assert (await send.take(1, now_us=now)).granted
    for windows in (send, recall, other_replica):
        await windows.close()
