"""NetEase Yunxin v2 API batch P2P send: its facts (vendors.md §3.1, §4.2, §5, §6, §14)."""

from __future__ import annotations

from typing import Final

from imgate.vendors._yunxin import spec as yunxin
from imgate.vendors.base.spec import Capabilities, Region, VendorLimits, VendorSpec

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
    ),
    # YX-CALL-V2 (vendors.md §3.1): primary and backup domains; fail over to the backup.
    regions={
        "china": Region("https://open.yunxinapi.com", "https://open-bak.yunxinapi.com"),
        "singapore": Region("https://open-sg.yunxinapi.com", "https://open-sg-bak.yunxinapi.com"),
    },
)
