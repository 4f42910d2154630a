"""RongCloud (融云) private messages, `message/private/publish.json`: its facts (CONTRACT
§12 rule 35; sources and what could not be verified: docs/vendor-mapping.md "RongCloud")."""

from __future__ import annotations

from typing import Final

from imgate.vendors.base.spec import (
    Capabilities,
    IdRule,
    IdUnit,
    RefusalStatuses,
    Region,
    VendorLimits,
    VendorSpec,
)

SPEC: Final = VendorSpec(
    vendor="rongcloud",
    display_name="RongCloud",
    path="/message/private/publish.json",
    limits=VendorLimits(
        recipients_per_call=1000,  # toUserId "at most 1,000 per call" (RC-SEND)
        # 6,000 messages a minute, a call to 1,000 users counting 1,000 (RC-SEND). No call
        # limit is documented for this API; every call is at least one message, so 6,000
        # calls a minute is implied.
        call_limit=6000,
        call_window_s=60.0,
        recipient_limit=6000,
        recipient_window_s=60.0,
        # How long the vendor refuses after 1008 is not documented: a per-minute quota is
        # freed by a full minute at most.
        block_s=60.0,
        vendor_block_s=0.0,
    ),
    # User ids: at most 64 bytes of letters, digits and + = - _ (RC-USER; the charset is
    # checked by rules.USER_ID).
    id_rule=IdRule(64, IdUnit.UTF8),
    credential_fields={"app_key": str, "app_secret": str},
    app_id_field="app_key",
    sandbox_credentials={
        "app_key": "sandbox-app-key",
        "app_secret": "sandbox-app-secret",  # public sandbox credential (CONTRACT §2, §12)
    },
    sender_required=True,  # fromUserId is required
    capabilities=Capabilities(
        # The answer has no per-recipient failure: an unregistered toUserId is accepted
        # as far as the answer says (unverified).
        reports_unknown_recipients=False,
        online_only=False,  # only status messages are online-only, another API
        skip_moderation=False,  # no moderation switch on private publish
        read_receipt=True,  # needReadReceipt (RC-JAVA)
        custom_sub_type=False,  # objectName only; no sub-type field
        message_ids=True,  # messageUIDs[{userId, messageUID}] (RC-GO, RC-JAVA models)
        # msgRandom de-duplicates only once enabled by a support ticket, with an
        # undocumented error code: not relied on.
        dedupes_resends=False,
        # recall.json needs the message's sentTime, which publish does not return.
        recall=False,
    ),
    # RC-GO REGION_*, RC-JAVA CenterEnum: primary and backup domains per data centre.
    regions={
        "china": Region("https://api.rong-api.com", "https://api-b.rong-api.com"),
        "singapore": Region("https://api.sg-light-api.com", "https://api-b.sg-light-api.com"),
        "singapore_b": Region("https://api.sg-b-light-api.com", "https://api-b.sg-b-light-api.com"),
        "north_america": Region("https://api.us-light-api.com", "https://api-b.us-light-api.com"),
        "saudi_arabia": Region("https://api.sau-light-api.com", "https://api-b.sau-light-api.com"),
    },
    default_base_url="https://api.rong-api.com",  # CONTRACT §12 rule 35
    # Business code → HTTP status, from the server status-code table (RC-CODES).
    refusal_statuses=RefusalStatuses(
        default=400,
        by_code={
            404: 404,  # no such endpoint
            1000: 500,
            1001: 401,
            1002: 400,
            1003: 400,
            1004: 401,
            1005: 400,
            1006: 401,
            1007: 401,
            1008: 429,
            1009: 430,
            1050: 504,
        },
    ),
)
