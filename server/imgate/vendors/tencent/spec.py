"""Tencent Cloud IM batch send (batchsendmsg): its facts (vendors.md §2.2, §3.2, §4.3,
§5, §6)."""

from __future__ import annotations

from typing import Final

from imgate.vendors.base.spec import (
    Capabilities,
    IdRule,
    IdUnit,
    RecallSpec,
    Region,
    VendorLimits,
    VendorSpec,
)

# Recalling one-to-one messages (TX-WD-ZH: the Chinese page has the rate and the
# codes; TX-WD-EN: "no time limit"; notes/recall.md §A). One message to one recipient
# per call: the MsgKey of the batchsendmsg call with each recipient's To_Account.
RECALL: Final = RecallSpec(
    method="POST",
    path="/v4/openim/admin_msgwithdraw",
    call_limit=200,  # "200次/秒"; not among the limits the console can raise
    call_window_s=1.0,
    block_s=1.0,  # none documented: one window
    vendor_block_s=0.0,
    rate_limit_code=60007,  # the REST family's rate code; the page lists none
    window_s=None,
    window="none: messages sent at any time",
    needs="`From_Account`, `To_Account`, the send call's `MsgKey`",
    unverified=(
        "the rate refusal's code (60007, the REST family's)",
        "a quota of its own, apart from batchsendmsg's (per-API limits)",
    ),
    source="https://www.tencentcloud.com/zh/document/product/1047/35015",
)

SPEC: Final = VendorSpec(
    vendor="tencent",
    display_name="Tencent Cloud IM",
    path="/v4/openim/batchsendmsg",
    limits=VendorLimits(
        recipients_per_call=500,
        call_limit=200,
        call_window_s=1.0,
        recipient_limit=12000,
        recipient_window_s=60.0,
        # Tencent documents no block. A rate refusal usually means the per-minute message
        # quota is spent (possibly by another system sharing the app): only a full minute
        # frees it, and 70050 asks for one minute explicitly.
        block_s=60.0,
        vendor_block_s=0.0,
        max_body_bytes=12288,  # the whole JSON packet; over it the vendor answers 93000
    ),
    # UserIDs count UTF-8 bytes (vendors.md §5); a longer one fails a whole call (90003).
    id_rule=IdRule(32, IdUnit.UTF8),
    credential_fields={"sdk_app_id": int, "secret_key": str, "admin_identifier": str},
    app_id_field="sdk_app_id",
    sandbox_credentials={
        "sdk_app_id": 1400000000,
        "secret_key": "sandbox-secret-key",  # public sandbox credential (CONTRACT §2)
        "admin_identifier": "administrator",
    },
    sender_required=False,  # an empty sender means the app admin
    capabilities=Capabilities(
        reports_unknown_recipients=True,  # ErrorList 70107 (with a quirk: vendors.md §7.3)
        online_only=True,  # OnlineOnlyFlag
        skip_moderation=True,  # SendMsgControl NoMsgCheck
        read_receipt=True,  # IsNeedReadReceipt
        custom_sub_type=False,  # TIMCustomElem has no sub-type
        message_ids=True,  # MsgKey
        # The 120 s de-duplication key (sender + MsgSeq + MsgRandom + content CRC32) is
        # documented on the sendmsg page only; batchsendmsg says MsgSeq/MsgRandom serve
        # de-duplication "within the same second" and nothing more (TX-1612, issue 22
        # fidelity 3): a call that may have been processed (70169, 90992, 91000, a
        # timeout after writing) is never resent.
        dedupes_resends=False,
        recall=True,  # admin_msgwithdraw
    ),
    # TX-REST (vendors.md §3.2): the host must be the SDKAppID's data centre; the
    # my-imcloud.com host is the documented fallback when the primary cannot be reached.
    regions={
        name: Region(f"https://{primary}", f"https://{backup}")
        for name, primary, backup in (
            ("china", "console.tim.qq.com", "adminapi.my-imcloud.com"),
            ("singapore", "adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"),
            ("seoul", "adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"),
            ("tokyo", "adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"),
            ("frankfurt", "adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"),
            ("silicon_valley", "adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"),
            ("jakarta", "adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"),
        )
    },
    own_options={
        "tencent_android_info": "OfflinePushInfo.AndroidInfo",
        "tencent_apns_info": "OfflinePushInfo.ApnsInfo",
    },
    recall=RECALL,
)
