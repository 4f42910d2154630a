"""Translator and emulator agree: every content kind and option the gateway accepts is
accepted by the strict emulator of each vendor (and the emulator checks what the vendor
documents as required)."""

from __future__ import annotations

import grpc
import pytest

from imgate.api.validate import validate_for_vendor
from imgate.sandbox import SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.registry import BY_VENDOR
from tests.conftest import VENDORS, StartGateway, spec_of
from tests.translators.cases import CONTENTS, CUSTOM_WITH_SUB_TYPE, IMAGE

_IMAGE_WITH_VARIANTS = pb.ImageContent()
_IMAGE_WITH_VARIANTS.CopyFrom(IMAGE)
_IMAGE_WITH_VARIANTS.large.CopyFrom(
    pb.ImageVariant(url="https://cdn.example/l.png", width=8, height=6)
)
_IMAGE_WITH_VARIANTS.thumbnail.CopyFrom(
    pb.ImageVariant(url="https://cdn.example/t.png", width=4, height=3)
)

MESSAGES = {
    **CONTENTS,
    "image with renditions": pb.Message(image=_IMAGE_WITH_VARIANTS),
}
OPTION_SETS = [
    pb.SendOptions(),
    pb.SendOptions(online_only=True, push_enabled=False),
    pb.SendOptions(online_only=True, offline_enabled=False),
    pb.SendOptions(
        offline_enabled=False,  # refused on Tencent without online_only (fidelity 1)
        unread_enabled=False,
        update_conversation=False,
        sync_to_sender=True,
        skip_moderation=True,
        push_title="T",
        push_content="C",
        push_payload='{"k":1}',
    ),
]


def _refused(backend: str, options: pb.SendOptions) -> bool:
    """Whether the backend's vendor cannot express `options` (refused by name before
    anything is sent: what the vendor cannot do, e.g. Tencent offline storage off alone)."""
    plugin = BY_VENDOR[backend]
    request = pb.BatchSendRequest(
        sender_id="ops", recipient_ids=["bob"], message=CONTENTS["text"], options=options
    )
    translator = plugin.translator(plugin.spec.sandbox_credentials)
    return bool(validate_for_vendor(request, ["bob"], translator))


@pytest.mark.parametrize("backend", VENDORS)
@pytest.mark.parametrize("kind", sorted(MESSAGES))
async def test_every_content_kind_is_accepted_by_the_emulator(
    backend: str, kind: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    can = spec_of(backend).capabilities
    for options in OPTION_SETS:
        if _refused(backend, options):
            continue  # refused by name before sending (tests/translators)
        message = pb.Message()
        message.CopyFrom(MESSAGES[kind])
        message.extension = '{"trace":"t1"}'
        request = pb.BatchSendRequest(
            backend=backend,
            sender_id="ops",
            recipient_ids=["bob", "ghost9"],
            message=message,
            options=options,
        )
        _, outcomes, _ = await gateway.send(request)
        states = {o.recipient_id: (o.state, o.vendor_code, o.detail) for o in outcomes}
        assert states["bob"][0] == pb.DELIVERY_STATE_ACCEPTED, (kind, options, states)
        unknown = (
            pb.DELIVERY_STATE_FAILED
            if can.reports_unknown_recipients
            else pb.DELIVERY_STATE_ACCEPTED
        )
        assert states["ghost9"][0] == unknown, states
    assert sandbox.state.stats(backend).refusals == {}


async def test_custom_sub_type_reaches_yunxin_v2(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    request = pb.BatchSendRequest(
        backend="yunxin_v2",
        sender_id="ops",
        recipient_ids=["bob"],
        message=pb.Message(custom=CUSTOM_WITH_SUB_TYPE),
    )
    _, outcomes, _ = await gateway.send(request)
    assert outcomes[0].state == pb.DELIVERY_STATE_ACCEPTED


async def test_vendor_specific_push_options_reach_the_emulators(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    cases = {
        "yunxin_v1": pb.SendOptions(push_nick_enabled=False),
        "yunxin_v2": pb.SendOptions(push_nick_enabled=True),
        "tencent": pb.SendOptions(
            tencent_android_info='{"Sound":"a.mp3"}',
            tencent_apns_info='{"Sound":"a.caf","BadgeMode":1,"MutableContent":1}',
        ),
    }
    for backend, options in cases.items():
        request = pb.BatchSendRequest(
            backend=backend,
            sender_id="ops",
            recipient_ids=["bob"],
            message=pb.Message(text=pb.TextContent(text="hi")),
            options=options,
        )
        _, outcomes, _ = await gateway.send(request)
        assert outcomes[0].state == pb.DELIVERY_STATE_ACCEPTED, (backend, outcomes[0])


async def test_offline_off_alone_never_reaches_tencent(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    """Fidelity 1 (issue 22): OnlineOnlyFlag, Tencent's only offline switch, also drops
    history, roaming and the unread count, and offline recipients were reported ACCEPTED
    though they never get the message: offline_enabled=false alone is refused, nothing is
    sent; with online_only it is what the caller asked for."""
    gateway = await start_gateway()
    request = pb.BatchSendRequest(
        backend="tencent",
        sender_id="ops",
        recipient_ids=["bob"],
        message=CONTENTS["text"],
        options=pb.SendOptions(offline_enabled=False),
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "offline_enabled" in (error.value.details() or "")
    assert sandbox.state.deliveries("tencent") == []
    request.options.online_only = True
    _, outcomes, _ = await gateway.send(request)
    assert outcomes[0].state == pb.DELIVERY_STATE_ACCEPTED
