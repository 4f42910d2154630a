"""The console in a real browser: Debian's headless Chromium driven by Playwright.

Open the console, submit a batch and watch it reach DONE, filter its FAILED outcomes, slow
the emulated vendor from the sandbox page and cancel a batch while it runs, read an
account's sandbox inbox. Every request the pages make stays on the gateway's origin, and
no page logs an error (a Content-Security-Policy violation would). Screenshots go to
tests/artifacts/console/ (CI keeps them as artefacts).

Chromium is Debian's (`apt-get install chromium`; IMGATE_CHROMIUM names another binary):
Playwright never downloads a browser here. Without it the test skips, unless
IMGATE_REQUIRE_BROWSER=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from imgate.sandbox import SandboxServer
from tests.http.conftest import HttpGateway, StartHttp

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
CHROMIUM = os.environ.get("IMGATE_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


def _browser_or_skip() -> None:
    missing = []
    if shutil.which(CHROMIUM) is None:
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (the dev extra)")
    if missing:
        if os.environ.get("IMGATE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test needs {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    _browser_or_skip()
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def test_the_console_sends_watches_filters_cancels_and_shows_the_inbox(
    start_http: StartHttp, sandbox: SandboxServer, page: Any
) -> None:
    # One vendor call at a time: a slowed batch of three calls can be cancelled mid-way.
    http: HttpGateway = await start_http(backend_overrides={"max_in_flight": 1})
    origin = http.base
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.set_default_timeout(TIMEOUT_MS)

    async def shot(name: str) -> None:
        await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    # Open it: the batches page, the sandbox link (sandbox mode).
    await page.goto(origin + "/")
    await page.wait_for_selector("#sandbox-link:not([hidden])")
    assert await page.title() == "imgate console"

    # Submit a small batch from the form; its page follows it live until DONE.
    await page.click("nav a[data-view=submit]")
    await page.wait_for_selector("#submit-backend option[value=tencent]", state="attached")
    await page.select_option("#submit-backend", "tencent")
    await page.fill("textarea[name=recipients]", "bob\ncarol, dave\nghost1\nghost2\nbob")
    await page.fill("input[name=text]", "hello from the browser test")
    await page.click("#submit-form button[type=submit]")
    await page.wait_for_selector("#batch-state:text-is('DONE')")
    await page.wait_for_selector("#watch-status:text-is('ended')")
    assert await page.locator("#outcomes tbody tr").count() == 5
    counts = await page.inner_text("#batch-counts")
    assert "accepted 3" in counts
    assert "failed 2" in counts
    assert "pending 0" in counts
    await shot("01-batch-done")

    # Filter FAILED: only the two ghosts.
    await page.select_option("#outcome-filter", "DELIVERY_STATE_FAILED")
    rows = page.locator("#outcomes tbody tr")
    assert await rows.count() == 2
    assert sorted(await rows.locator("td:nth-child(2)").all_inner_texts()) == ["ghost1", "ghost2"]
    assert set(await rows.locator("td:nth-child(4)").all_inner_texts()) == {"RECIPIENT_NOT_FOUND"}
    await shot("02-filter-failed")

    # The batch list: state, counts, progress, rate.
    await page.click("nav a[data-view=batches]")
    row = page.locator("#batches tbody tr").first
    await row.locator("td.state:text-is('DONE')").wait_for()
    assert await row.locator(".bar .accepted").count() == 1
    await shot("03-batches")

    # Slow the emulated Tencent from the sandbox page: every call waits 2 s.
    await page.click("nav a[data-view=sandbox]")
    await page.select_option("#fault-vendor", "tencent")
    await page.select_option("#fault-kind", "latency")
    await page.fill("#fault-times", "0")
    await page.fill("#fault-delay", "2")
    await page.click("#fault-form button[type=submit]")
    await page.wait_for_selector("#faults td:text('latency (every call)')")
    assert [rule.kind for rule in sandbox.state.faults("tencent")] == ["latency"]
    await shot("04-sandbox-faults")

    # A batch of three calls: cancel it while the first one is in flight.
    await page.click("nav a[data-view=submit]")
    await page.fill("textarea[name=recipients]", "\n".join(f"user{n}" for n in range(1500)))
    await page.click("#submit-form button[type=submit]")
    await page.wait_for_selector("#batch-state:text-is('RUNNING')")
    await page.click("#batch-cancel")
    await page.wait_for_selector("#batch-state:text-is('CANCELLED')", timeout=3 * TIMEOUT_MS)
    await page.wait_for_selector("#watch-status:text-is('ended')")
    counts = await page.inner_text("#batch-counts")
    assert "pending 0" in counts
    assert "failed 0" not in counts  # the unsent recipients ended FAILED / NOT_ATTEMPTED
    await page.select_option("#outcome-filter", "DELIVERY_STATE_FAILED")
    assert "NOT_ATTEMPTED" in await page.inner_text("#outcomes tbody tr:first-child")
    await shot("05-batch-cancelled")

    # Clear the fault; bob's inbox holds what the first batch delivered to him.
    await page.click("nav a[data-view=sandbox]")
    await page.click("#faults tr:has(td:text-is('tencent')) button")
    await page.wait_for_selector("#faults tr:has(td:text-is('tencent')) td:text-is('none')")
    await page.fill("#inbox-account", "bob")
    await page.click("#inbox-form button[type=submit]")
    inbox = page.locator("#inbox tbody tr")
    await inbox.first.wait_for()
    assert await inbox.count() == 1  # the batch's duplicate "bob" was removed
    assert "tencent" in await inbox.first.inner_text()
    await shot("06-sandbox-inbox")

    await page.click("nav a[data-view=backends]")
    await page.wait_for_selector("#backends tbody tr td:text-is('tencent')")
    await shot("07-backends")

    # Nothing left the gateway's origin; nothing failed in the page.
    foreign = [
        url for url in requests if not (url.startswith(origin + "/") or url.startswith("data:"))
    ]
    assert foreign == []
    assert any(url.endswith("/outcomes") for url in requests)  # the live watch (SSE)
    assert problems == []


async def test_the_console_works_with_a_callers_token_kept_for_the_tab_only(
    start_http: StartHttp, page: Any
) -> None:
    from imgate.api.callers import token_sha256
    from imgate.config.model import CallerConfig

    token = "console-token-Jx81"
    http: HttpGateway = await start_http(
        callers=(CallerConfig("ops", bytes.fromhex(token_sha256(token))),)
    )
    status, batch = await http.call(
        "POST",
        "/v1/batches",
        {"backend": "tencent", "recipientIds": ["bob"], "message": {"text": {"text": "hi"}}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(http.base + "/")
    await page.wait_for_selector("#notice:text('needs a caller token')")
    await page.fill("#token", token)
    await page.click("#token-form button[type=submit]")
    await page.wait_for_selector(f"#batches tr[data-batch='{batch['batchId']}']")
    await page.screenshot(path=str(ARTIFACTS / "08-with-token.png"))
    stored = await page.evaluate(
        "[sessionStorage.getItem('imgate.token'), localStorage.length, document.cookie]"
    )
    assert stored == [token, 0, ""]
