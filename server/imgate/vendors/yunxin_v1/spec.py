"""NetEase Yunxin legacy API (nimserver) batch P2P send: its facts (vendors.md §3.1,
§4.1, §5, §6)."""

from __future__ import annotations

from typing import Final

from imgate.vendors._yunxin import spec as yunxin
from imgate.vendors.base.spec import Capabilities, Region, VendorLimits, VendorSpec

SPEC: Final = VendorSpec(
    vendor="yunxin_v1",
    display_name="NetEase Yunxin legacy API",
    path="/nimserver/msg/sendBatchMsg.action",
    limits=VendorLimits(
        recipients_per_call=500,
        call_limit=120,
        call_window_s=60.0,
        recipient_limit=0,
        recipient_window_s=60.0,
        block_s=60.0,  # "the app is blocked for 1 minute" after 416
        vendor_block_s=60.0,
    ),
    id_rule=yunxin.ID_RULE,
    credential_fields=yunxin.CREDENTIAL_FIELDS,
    app_id_field=yunxin.APP_ID_FIELD,
    sandbox_credentials=yunxin.SANDBOX_CREDENTIALS,
    sender_required=True,
    capabilities=Capabilities(
        reports_unknown_recipients=True,  # `unregister`
        online_only=True,
        skip_moderation=True,  # useYidun=0
        read_receipt=False,  # batch one-to-one sends have no read receipt
        custom_sub_type=False,  # only sendMsg.action has subType (§4.1)
        message_ids=True,  # msgids, with returnMsgid=true
    ),
    # YX-CALL-V1 (vendors.md §3.1): primary and backup domains; fail over to the backup.
    regions={
        "china": Region("https://api.yunxinapi.com", "https://api-cn-bak.yunxinapi.com"),
        "singapore": Region("https://api-sg.yunxinapi.com", "https://api-sg-bak.yunxinapi.com"),
    },
)
