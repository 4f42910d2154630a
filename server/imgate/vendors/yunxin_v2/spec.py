"""NetEase Yunxin v2 API batch P2P send: its facts (vendors.md §3.1, §4.2, §5, §6, §14)."""

from __future__ import annotations

from typing import Final

from imgate.vendors._yunxin import spec as yunxin
from imgate.vendors.base.spec import Capabilities, RecallSpec, Region, VendorLimits, VendorSpec

# Recall ("withdraw") of a P2P message by its server id (Java SDK MessageV2Service
# withdrawMessage and IMessageV2Service's javadoc; Go SDK WithdrawMessage;
# notes/recall.md §B). type=1, one-way: the receiver's copies are deleted, within 30
# days (type=2, two-way, only within the app's window: 2 minutes by default). Its rate
# and codes are not published: half the legacy recall's rate, its 10 s block.
RECALL: Final = RecallSpec(
    method="DELETE",
    path="/im/v2/conversations/{conversation_id}/messages/{message_server_id}",
    call_limit=50,
    call_window_s=1.0,
    block_s=10.0,
    vendor_block_s=10.0,
    rate_limit_code=416,  # the documented rate code (107323 is on no vendor page: issue 22)
    window_s=30 * 86400.0,
    window="`type=1` (one-way, the gateway's): 30 days; `type=2` (two-way): the app's"
    " window, default 2 min, at most 7 days",
    needs="conversation `sender|1|recipient`, `message_server_id`, `type=1`",
    unverified=(
        "the rate: 50 calls/s and a 10 s block (not published; half the legacy API's)",
        "the codes for no such message (404 assumed) and a passed window (508 assumed)",
    ),
    source="https://github.com/netease-im/yunxin-server-sdk-java"
    " (v2/message/IMessageV2Service.java)",
)

SPEC: Final = VendorSpec(
    vendor="yunxin_v2",
    display_name="NetEase Yunxin v2 API",
    path="/im/v2/conversations/messages",
    # The batch category's numbers are not published (vendors.md §6, §14.1-2): 100 per
    # call as the current doc and both SDKs say, and v1's documented 120 calls/min with a
    # one-minute block as a conservative default until the plan's numbers are configured.
    limits=VendorLimits(
        recipients_per_call=100,
        call_limit=120,
        call_window_s=60.0,
        recipient_limit=0,
        recipient_window_s=60.0,
        block_s=60.0,
        vendor_block_s=60.0,
    ),
    id_rule=yunxin.ID_RULE,
    credential_fields=yunxin.CREDENTIAL_FIELDS,
    app_id_field=yunxin.APP_ID_FIELD,
    sandbox_credentials=yunxin.SANDBOX_CREDENTIALS,
    sender_required=True,
    capabilities=Capabilities(
        reports_unknown_recipients=True,  # failed_list
        online_only=True,
        skip_moderation=True,  # antispam_config.antispam_enabled = false
        read_receipt=False,
        custom_sub_type=True,
        message_ids=True,  # success_list message_server_id
        recall=True,  # DELETE conversations/{id}/messages/{message_server_id}
    ),
    # YX-CALL-V2 (vendors.md §3.1): primary and backup domains; fail over to the backup.
    regions={
        "china": Region("https://open.yunxinapi.com", "https://open-bak.yunxinapi.com"),
        "singapore": Region("https://open-sg.yunxinapi.com", "https://open-sg-bak.yunxinapi.com"),
    },
    recall=RECALL,
)
