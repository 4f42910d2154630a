"""Every registered vendor's translator against its own emulator, over HTTP.

One suite for every vendor in imgate.vendors.registry (like river's riverdrivertest):
what the translator builds the emulator accepts, what the emulator answers the
translator reads as the vendor means it, and both keep the facts of the one spec they
share (recipients per call, the id rule, the sandbox credentials, refusal statuses).
Cases that depend on what a vendor can do ask the spec's capabilities. A new vendor runs
all of it with no edit here.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from imgate.sandbox import FaultRule, SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import CallResult, Disposition, Translator, not_accepted
from imgate.vendors.registry import VENDORS, VendorPlugin

from .conftest import StartSandbox

PLUGINS = pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
SENDER = "contract_sender"


def _request(recipients: Sequence[str]) -> pb.BatchSendRequest:
    return pb.BatchSendRequest(
        sender_id=SENDER,
        recipient_ids=list(recipients),
        message=pb.Message(text=pb.TextContent(text="contract")),
    )


async def _send(
    sandbox: SandboxServer,
    translator: Translator,
    recipients: Sequence[str],
    statuses: list[int] | None = None,
) -> CallResult:
    """One call as the dispatcher makes it: built by the translator, sent to the base URL
    plus the request's path, read back by the translator."""
    request = translator.build(
        translator.prepare(_request(recipients)),
        list(recipients),
        secrets.token_hex(8),
        time.time(),
        secrets.token_hex(16),
    )
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
        body = await response.read()
        if statuses is not None:
            statuses.append(response.status)
        return translator.parse(list(recipients), response.status, body)


def _translator(plugin: VendorPlugin, **credentials: Any) -> Translator:
    return plugin.translator({**plugin.spec.sandbox_credentials, **credentials})


def _reasons(result: CallResult) -> set[int]:
    if result.disposition is Disposition.DONE:
        return {item.reason for item in not_accepted(result.results)}
    return {result.reason}


async def _started(start_sandbox: StartSandbox, plugin: VendorPlugin, **settings: Any) -> Any:
    defaults = plugin.emulator.default_settings()
    config = SandboxConfig(
        seed=1, vendors={plugin.vendor: dataclasses.replace(defaults, **settings)}
    )
    return (await start_sandbox(config)).server


@PLUGINS
async def test_what_the_translator_builds_the_emulator_delivers(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    result = await _send(sandbox, _translator(plugin), ["alice", "bob"])
    assert result.disposition is Disposition.DONE
    assert all(item.accepted for item in result.results)
    assert sorted(d.recipient for d in sandbox.state.deliveries(plugin.vendor)) == ["alice", "bob"]
    assert sandbox.state.stats(plugin.vendor).refusals == {}


@PLUGINS
async def test_unknown_recipients_as_the_spec_says(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    result = await _send(sandbox, _translator(plugin), ["alice", "ghost1"])
    alice, ghost = result.results
    assert alice.accepted
    if plugin.spec.capabilities.reports_unknown_recipients:
        assert (ghost.accepted, ghost.reason) == (False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND)
    else:
        assert ghost.accepted  # the vendor says nothing of it
    assert [d.recipient for d in sandbox.state.deliveries(plugin.vendor)] == ["alice"]


@PLUGINS
async def test_wrong_credentials_are_an_auth_refusal_at_the_specs_status(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    spec = plugin.spec
    wrong = {
        key: value + "-wrong"
        for key, value in spec.sandbox_credentials.items()
        if isinstance(value, str) and key != spec.app_id_field
    }
    statuses: list[int] = []
    result = await _send(sandbox, _translator(plugin, **wrong), ["alice"], statuses)
    assert _reasons(result) == {pb.FAILURE_REASON_AUTH_FAILED}
    assert statuses[0] in spec.refusal_statuses.statuses
    assert sandbox.state.stats(plugin.vendor).calls_processed == 0


@PLUGINS
async def test_recipients_per_call_is_the_specs_on_both_sides(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    cap = plugin.spec.limits.recipients_per_call
    ids = [f"u{n:05d}" for n in range(cap + 1)]
    full = await _send(sandbox, _translator(plugin), ids[:cap])
    assert all(item.accepted for item in full.results)
    over = await _send(sandbox, _translator(plugin), ids)
    assert not any(item.accepted for item in over.results)
    assert len(sandbox.state.deliveries(plugin.vendor)) == cap


@PLUGINS
async def test_the_id_rule_is_the_specs_on_both_sides(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin)
    longest = "x" * plugin.spec.id_rule.max_length  # ASCII: one unit a character, any rule
    assert plugin.spec.id_rule.fits(longest)
    assert not plugin.spec.id_rule.fits(longest + "x")
    fits = await _send(sandbox, _translator(plugin), [longest])
    assert fits.results[0].accepted
    over = await _send(sandbox, _translator(plugin), [longest + "x"])
    assert not any(item.accepted for item in over.results)
    assert [d.recipient for d in sandbox.state.deliveries(plugin.vendor)] == [longest]


@PLUGINS
async def test_the_emulators_rate_refusal_reads_as_rate_limited(
    plugin: VendorPlugin, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin, call_limit=1)
    translator = _translator(plugin)
    assert (await _send(sandbox, translator, ["alice"])).disposition is Disposition.DONE
    statuses: list[int] = []
    refused = await _send(sandbox, translator, ["bob"], statuses)
    assert refused.disposition is Disposition.RATE_LIMITED
    assert statuses[0] == plugin.spec.refusal_statuses.of(plugin.emulator.rate_limit_code)
    assert [d.recipient for d in sandbox.state.deliveries(plugin.vendor)] == ["alice"]


@PLUGINS
@pytest.mark.parametrize(
    ("kind", "disposition"),
    [
        ("refuse_502", Disposition.RETRY),  # not processed: safe to resend
        ("error_500", Disposition.AMBIGUOUS),  # processed, then the internal error
        ("malformed", Disposition.AMBIGUOUS),
        ("html", Disposition.AMBIGUOUS),
    ],
)
async def test_faults_read_as_what_they_mean(
    plugin: VendorPlugin, kind: str, disposition: Disposition, start_sandbox: StartSandbox
) -> None:
    sandbox = await _started(start_sandbox, plugin, faults=(FaultRule(kind=kind, times=1),))  # type: ignore[arg-type]
    result = await _send(sandbox, _translator(plugin), ["alice"])
    assert result.disposition is disposition, result
