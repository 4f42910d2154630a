"""Every registered vendor's recall translator against its own recall emulator, over HTTP
(as tests/sandbox/test_contract.py does for sending): a message the send translator got
an id for is withdrawn by what the recall translator builds, once; the emulator's answers
(no such message, rate, credentials, a lost answer) read as the vendor means them. Cases
that differ by vendor ask its RecallSpec. A vendor with a recall API runs it all."""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

import aiohttp
import pytest

from imgate.sandbox import FaultRule, SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.recall import RecallTarget, RecallTranslator
from imgate.vendors.base.translator import CallResult, Disposition, RecipientResult
from imgate.vendors.registry import VENDORS, VendorPlugin

from .conftest import StartSandbox

RECALLING = [plugin for plugin in VENDORS if plugin.spec.recall is not None]
PLUGINS = pytest.mark.parametrize("plugin", RECALLING, ids=lambda plugin: plugin.vendor)
SENDER = "contract_sender"


async def _http(sandbox: SandboxServer, request: Any) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method,
            sandbox.url + request.path,
            params=request.query,
            headers=dict(request.headers),
            data=request.body,
        ) as response,
    ):
        return response.status, await response.read()


async def _sent(
    sandbox: SandboxServer, plugin: VendorPlugin, recipients: list[str]
) -> list[RecipientResult]:
    """Send as the gateway does for a recallable backend (asking for ids if need be)."""
    translator = plugin.translator(plugin.spec.sandbox_credentials)
    message = pb.BatchSendRequest(
        sender_id=SENDER,
        recipient_ids=recipients,
        message=pb.Message(text=pb.TextContent(text="to be recalled")),
    )
    assert plugin.spec.recall is not None
    if plugin.spec.recall.ids_on_request:
        message.options.return_message_ids = True
    request = translator.build(
        translator.prepare(message), recipients, "k", time.time(), secrets.token_hex(8)
    )
    result = translator.parse(recipients, *await _http(sandbox, request))
    assert result.disposition is Disposition.DONE
    return list(result.results)


def _recaller(plugin: VendorPlugin, **credentials: Any) -> RecallTranslator:
    assert plugin.recall_translator is not None
    return plugin.recall_translator({**plugin.spec.sandbox_credentials, **credentials})


async def _recall(
    sandbox: SandboxServer, recaller: RecallTranslator, sent: RecipientResult
) -> CallResult:
    target = RecallTarget(SENDER, sent.recipient_id, sent.vendor_message_id, sent.vendor_time_ms)
    request = recaller.build(
        target, [sent.recipient_id], secrets.token_hex(8), time.time(), secrets.token_hex(8)
    )
    return recaller.parse([sent.recipient_id], *await _http(sandbox, request))


async def _started(start_sandbox: StartSandbox, plugin: VendorPlugin, **settings: Any) -> Any:
    defaults = plugin.emulator.default_settings()
    config = SandboxConfig(
        seed=1, vendors={plugin.vendor: dataclasses.replace(defaults, **settings)}
    )
    return (await start_sandbox(config)).server


@PLUGINS
async def test_what_the_recall_translator_builds_the_emulator_withdraws_once(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    sent = await _sent(sandbox, plugin, ["alice", "bob"])
    assert all(item.accepted and item.vendor_message_id for item in sent)
    recaller = _recaller(plugin)
    for item in sent:
        result = await _recall(sandbox, recaller, item)
        assert result.disposition is Disposition.DONE
        assert [r.accepted for r in result.results] == [True]
    again = await _recall(sandbox, recaller, sent[0])  # a second recall withdraws nothing
    assert again.disposition is Disposition.DONE
    withdrawn = sandbox.state.withdrawals(plugin.vendor)
    assert sorted(w.recipient for w in withdrawn) == ["alice", "bob"]
    stats = sandbox.state.stats(plugin.vendor)
    assert (stats.withdrawals, stats.repeated_withdrawals, stats.refusals) == (2, 1, {})


@PLUGINS
async def test_a_message_the_vendor_does_not_hold(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    (sent,) = await _sent(sandbox, plugin, ["alice"])
    stranger = dataclasses.replace(sent, recipient_id="carol")  # never sent to carol
    result = await _recall(sandbox, _recaller(plugin), stranger)
    assert result.disposition is Disposition.DONE
    (item,) = result.results
    assert plugin.spec.recall is not None
    if plugin.spec.recall.unknown_message_succeeds:
        assert item.accepted  # the vendor's documented answer: 200 all the same
    else:
        assert (item.accepted, item.reason) == (False, pb.FAILURE_REASON_NOT_RECALLABLE)
    assert sandbox.state.withdrawals(plugin.vendor) == []


@PLUGINS
async def test_a_recall_over_the_recall_quota_is_rate_limited(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin, recall_call_limit=1, recall_call_window_s=60.0)
    sent = await _sent(sandbox, plugin, ["alice", "bob"])
    recaller = _recaller(plugin)
    assert (await _recall(sandbox, recaller, sent[0])).disposition is Disposition.DONE
    refused = await _recall(sandbox, recaller, sent[1])
    assert refused.disposition is Disposition.RATE_LIMITED
    assert plugin.spec.recall is not None
    assert refused.vendor_code == str(plugin.spec.recall.rate_limit_code)


@PLUGINS
async def test_a_recall_with_bad_credentials_is_an_auth_failure(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    (sent,) = await _sent(sandbox, plugin, ["alice"])
    wrong = {
        key: f"{value}x"
        for key, value in plugin.spec.sandbox_credentials.items()
        if isinstance(value, str) and "secret" in key
    }
    result = await _recall(sandbox, _recaller(plugin, **wrong), sent)
    assert pb.FAILURE_REASON_AUTH_FAILED in {result.reason, *(r.reason for r in result.results)}
    assert sandbox.state.withdrawals(plugin.vendor) == []


@PLUGINS
async def test_a_lost_recall_answer_is_uncertain(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    (sent,) = await _sent(sandbox, plugin, ["alice"])
    sandbox.state.set_faults(plugin.vendor, [FaultRule(kind="error_500", api="recall")])
    result = await _recall(sandbox, _recaller(plugin), sent)
    assert result.disposition is Disposition.AMBIGUOUS  # it was withdrawn, we cannot know
    assert [w.recipient for w in sandbox.state.withdrawals(plugin.vendor)] == ["alice"]
