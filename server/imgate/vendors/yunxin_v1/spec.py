"""NetEase Yunxin legacy API (nimserver) batch P2P send: its facts (vendors.md §3.1,
§4.1, §5, §6)."""

from __future__ import annotations

from typing import Final

from imgate.vendors._yunxin import spec as yunxin
from imgate.vendors.base.spec import Capabilities, RecallSpec, Region, VendorLimits, VendorSpec

# Two-way recall, msg/recall.action (YX1-RECALL, updated 2024-07-17; fields from the
# Java SDK's RecallMessageRequestV1; notes/recall.md §C). It needs the message id that
# sendBatchMsg returns only with returnMsgid (then 100 recipients per call) and the
# call's timetag. A message it does not hold answers 200 all the same.
RECALL: Final = RecallSpec(
    method="POST",
    path="/nimserver/msg/recall.action",
    call_limit=100,  # "单个应用最高调用频率:100 次/秒"
    call_window_s=1.0,
    block_s=10.0,  # "如超限,将被屏蔽 10 秒"
    vendor_block_s=10.0,
    rate_limit_code=416,  # the family's rate code
    window_s=30 * 86400.0,  # with ignoreTime=1, which the gateway sends
    window="the app's two-way recall window (default 2 min, at most 7 days in the"
    " console); with `ignoreTime=1`, which the gateway sends, about 30 days",
    ids_on_request=True,
    unknown_message_succeeds=True,  # "会按撤回成功处理,返回 200"
    needs="`deleteMsgid` (msgids: returnMsgid), `timetag` of the send call, `from`, `to`, `type` 7",
    unverified=(
        "the rate refusal's code (416, the family's)",
        "the window-passed code (508 assumed)",
        "ignoreTime's 30 days (an old page only)",
    ),
    source="https://doc.yunxin.163.com/messaging/server-apis/zE1NjUyNDg?platform=server",
)

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
        recall=True,  # recall.action, for a backend that asks for msgids (recallable)
    ),
    # YX-CALL-V1 (vendors.md §3.1): primary and backup domains; fail over to the backup.
    regions={
        "china": Region("https://api.yunxinapi.com", "https://api-cn-bak.yunxinapi.com"),
        "singapore": Region("https://api-sg.yunxinapi.com", "https://api-sg-bak.yunxinapi.com"),
    },
    recall=RECALL,
)
