"""The bounded delivery log (ring + paging) and the time scale of the rate windows."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from imgate.sandbox import Clock, SandboxConfig, YunxinV1Settings

from .conftest import StartSandbox
from .helpers import FakeClock, Vendors, yx1_fields


async def _get(vendors: Vendors, path: str, **params: str) -> Any:
    async with vendors.session.get(vendors.server.url + path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_log_keeps_the_newest_deliveries_and_duplicates_stay_exact(
    start_sandbox: StartSandbox,
) -> None:
    vendors = await start_sandbox(SandboxConfig(max_logged_deliveries=3))
    await vendors.yx1(yx1_fields(to=["a", "b", "c", "d"]))
    await vendors.yx1(yx1_fields(to=["e"]))
    state = vendors.server.state
    assert [d.recipient for d in state.deliveries("yunxin_v1")] == ["c", "d", "e"]
    # "a" left the ring long ago; sending it again is still a duplicate delivery.
    await vendors.yx1(yx1_fields(to=["a"]))
    stats = state.stats("yunxin_v1")
    assert (stats.deliveries, stats.duplicate_deliveries) == (6, 1)
    assert [(d.recipient, d.duplicate) for d in state.deliveries("yunxin_v1")] == [
        ("d", False),
        ("e", False),
        ("a", True),
    ]


async def test_deliveries_are_served_in_pages_with_a_cursor(vendors: Vendors) -> None:
    await vendors.yx1(yx1_fields(to=[f"user{i}" for i in range(25)]))
    first = await _get(vendors, "/sandbox/deliveries", limit="10")
    assert [d["recipient"] for d in first["deliveries"]] == [f"user{i}" for i in range(10)]
    assert [d["seq"] for d in first["deliveries"]] == list(range(1, 11))
    assert (first["next_after"], first["truncated"]) == (10, False)
    seen = list(first["deliveries"])
    cursor = first["next_after"]
    while True:
        page = await _get(vendors, "/sandbox/deliveries", after=str(cursor), limit="10")
        if not page["deliveries"]:
            break
        seen += page["deliveries"]
        cursor = page["next_after"]
    assert [d["recipient"] for d in seen] == [f"user{i}" for i in range(25)]
    # Without `limit` a page is at most 1000 entries: one request never serialises the ring.
    assert len((await _get(vendors, "/sandbox/deliveries"))["deliveries"]) == 25


async def test_a_reader_that_fell_behind_the_ring_is_told(start_sandbox: StartSandbox) -> None:
    vendors = await start_sandbox(SandboxConfig(max_logged_deliveries=5))
    await vendors.yx1(yx1_fields(to=[f"u{i}" for i in range(8)]))
    page = await _get(vendors, "/sandbox/deliveries", after="0")
    assert page["truncated"] is True
    assert [d["seq"] for d in page["deliveries"]] == [4, 5, 6, 7, 8]
    assert (await _get(vendors, "/sandbox/deliveries", after="4"))["truncated"] is False


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "10001"}, {"after": "-1"}])
async def test_bad_paging_parameters_are_a_400(vendors: Vendors, query: dict[str, str]) -> None:
    url = vendors.server.url + "/sandbox/deliveries"
    async with vendors.session.get(url, params=query) as response:
        assert response.status == 400


async def test_time_scale_shortens_windows_and_blocks(start_sandbox: StartSandbox) -> None:
    clock = FakeClock()
    settings = YunxinV1Settings(call_limit=2, call_window_s=60.0, block_s=60.0)
    vendors = await start_sandbox(
        SandboxConfig(
            vendors={"yunxin_v1": settings}, clock=Clock(monotonic=clock), time_scale=60.0
        )
    )
    for _ in range(2):
        assert (await vendors.yx1(yx1_fields()))["code"] == 200
    assert (await vendors.yx1(yx1_fields()))["code"] == 416  # limit reached: blocked
    assert vendors.server.state.stats("yunxin_v1").blocked_for_s == pytest.approx(1.0)
    clock.advance(1.01)  # a scaled minute later: window and block are over
    assert (await vendors.yx1(yx1_fields()))["code"] == 200
    info = await _get(vendors, "/sandbox/info")
    assert info["vendors"]["yunxin_v1"]["limits"]["call_window_s"] == pytest.approx(1.0)
    assert info["vendors"]["yunxin_v1"]["limits"]["call_limit"] == 2


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan")])
def test_time_scale_must_be_positive_and_finite(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        SandboxConfig(time_scale=scale)


async def test_the_banner_says_when_time_is_scaled() -> None:
    from imgate.sandbox import SandboxServer

    async with SandboxServer(config=SandboxConfig(time_scale=60)) as server:
        assert "time scale 60x" in server.banner()
    async with SandboxServer() as server:
        assert "time scale" not in server.banner()


async def test_a_page_of_a_full_ring_is_small_and_quick(vendors: Vendors) -> None:
    # The issue: one unpaged GET of a long run's log was 56 MB and stalled the event loop.
    await vendors.yx1(yx1_fields(to=["seed"]))
    template = vendors.server.state.deliveries()[0]
    for _ in range(100_000):
        vendors.server.state.record(template)
    url = vendors.server.url + "/sandbox/deliveries"
    started = time.monotonic()
    async with vendors.session.get(url, params={"after": "90000"}) as response:
        body = await response.read()
    elapsed = time.monotonic() - started
    page = json.loads(body)
    assert len(page["deliveries"]) == 1000
    assert page["deliveries"][0]["seq"] == 90001
    assert len(body) < 1_000_000
    assert elapsed < 1.0
