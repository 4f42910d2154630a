"""A vendor's facts, declared once: what validation, the translator, the emulator, the
docs tables and the shared test suites read (each vendor's own `spec.py` fills one in).

Facts only: no code of the vendor's API. Whatever can be said as data (limits, the id
rule, credentials, what the API can express, how it answers refusals over HTTP) lives
here, so that a reader never has to ask "which vendor is this?".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imgate.vendors.base.chars import java_len


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorLimits:
    """A vendor's published limits; the defaults for a backend of that vendor."""

    recipients_per_call: int
    """Most recipients in one call: the vendor's documented maximum, and the default."""
    call_limit: int
    call_window_s: float
    recipient_limit: int
    """0 = the vendor does not count recipients."""
    recipient_window_s: float
    block_s: float
    """How long a backend pauses after a rate refusal (the gateway's default)."""
    vendor_block_s: float
    """How long the vendor itself refuses every call after a rate refusal (0 = it does
    not block): what the emulator does."""
    max_body_bytes: int | None = None
    """The whole request body, when the vendor caps it."""


@dataclass(frozen=True, slots=True)
class Region:
    """A vendor's documented endpoints for one data centre: the primary base URL and the
    backup the vendor tells callers to fail over to."""

    base_url: str
    backup_base_url: str


class IdUnit(enum.Enum):
    """How a vendor counts the length of an account id."""

    UTF16 = "characters"
    """UTF-16 code units, as Java's String.length() (an emoji is two)."""
    UTF8 = "UTF-8 bytes"
    CODE_POINTS = "code points"


@dataclass(frozen=True, slots=True)
class IdRule:
    """The longest account id (sender or recipient) a vendor takes, and how it counts.

    Every rule also forbids what no vendor takes: an empty id, control, format and line
    separator characters, and leading or trailing whitespace (api.validate).
    """

    max_length: int
    unit: IdUnit

    def length(self, value: str) -> int:
        """`value`'s length as the vendor counts it."""
        if self.unit is IdUnit.UTF16:
            return java_len(value)
        if self.unit is IdUnit.UTF8:
            return len(value.encode("utf-8", "surrogatepass"))
        return len(value)

    def fits(self, value: str) -> bool:
        """Whether `value` is not longer than the vendor allows."""
        # Every unit counts a character at least once: short ids need no encoding.
        if len(value) * 4 <= self.max_length:
            return True
        return self.length(value) <= self.max_length

    def describe(self) -> str:
        """The rule in words, e.g. "at most 32 characters"."""
        return f"at most {self.max_length} {self.unit.value}"


@dataclass(frozen=True, slots=True)
class AnyIdRule:
    """Ids that some vendor of a set takes (an uploaded recipient list is bound to no
    backend: what decides is the rule of the backend it is sent with, at submit)."""

    rules: tuple[IdRule, ...]

    @classmethod
    def of(cls, rules: Iterable[IdRule]) -> AnyIdRule:
        return cls(tuple(dict.fromkeys(rules)))

    @property
    def max_length(self) -> int:
        """The most any of the rules allows (in a unit where printable ASCII counts one)."""
        return max(rule.max_length for rule in self.rules)

    def fits(self, value: str) -> bool:
        return any(rule.fits(value) for rule in self.rules)

    def describe(self) -> str:
        allowed = " or ".join(rule.describe() for rule in self.rules)
        return f"longer than any configured vendor takes ({allowed})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What the vendor's batch API can express or does. A request asking for something
    the vendor cannot do is refused by name (CONTRACT §8 rule 23), never dropped."""

    reports_unknown_recipients: bool
    """The answer names recipients whose account does not exist (they end FAILED); else
    an unknown account is ACCEPTED as the vendor says."""
    online_only: bool
    """SendOptions.online_only can be expressed."""
    skip_moderation: bool
    """SendOptions.skip_moderation can be expressed."""
    read_receipt: bool
    """SendOptions.read_receipt = true can be expressed."""
    custom_sub_type: bool
    """CustomContent.sub_type can be carried."""
    message_ids: bool
    """An accepted recipient gets the vendor's message id (with return_message_ids when
    the API asks for it)."""
    dedupes_resends: bool = False
    """The vendor documents that it de-duplicates a resent call: only then may a call
    that may have been processed be sent again (CONTRACT, Errors and retries)."""
    recall: bool = False
    """The gateway can recall a message sent through this vendor."""


@dataclass(frozen=True, slots=True)
class RefusalStatuses:
    """The HTTP status a vendor answers a refusal (an error code in its body) with.

    Yunxin and Tencent answer every business error with HTTP 200; a vendor that answers
    with 4xx/5xx says so here, and both its emulator and its translator follow.
    """

    default: int = 200
    by_code: Mapping[int, int] = field(default_factory=dict)
    """Vendor code → HTTP status, where it differs from `default`."""

    def of(self, code: int) -> int:
        """The HTTP status of a refusal with vendor code `code`."""
        return self.by_code.get(code, self.default)

    @property
    def statuses(self) -> frozenset[int]:
        """Every status whose body is the vendor's answer (read, not judged by status)."""
        return frozenset({200, self.default, *self.by_code.values()})


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallSpec:
    """A vendor's recall API: its facts (with their sources in the vendor's spec.py)."""

    method: str
    path: str
    """The documented path, appended to the backend's base_url; `{name}` parts are the
    call's (Yunxin v2's conversation and message ids)."""
    call_limit: int
    call_window_s: float
    """At most `call_limit` recall calls in any window of this many seconds: the recall
    API's own quota, per app, apart from the send API's."""
    block_s: float
    """How long a backend pauses its recalls after a rate refusal (the gateway's default)."""
    vendor_block_s: float
    """How long the vendor refuses every recall after a rate refusal (0 = it does not
    block): what the emulator does."""
    rate_limit_code: int
    """The vendor's code for a recall refused for rate."""
    window_s: float | None
    """How long after it was sent a message can be recalled the way the gateway asks (None:
    any time)."""
    window: str
    """The recall window(s) in words, for the docs."""
    ids_on_request: bool = False
    """The send API returns the message ids recall needs only when asked
    (SendOptions.return_message_ids): a backend that may recall asks for them."""
    unknown_message_succeeds: bool = False
    """The API answers success for a message it does not hold: ACCEPTED then means the
    vendor took the recall, not that it withdrew something."""
    needs: str
    """What a call names besides the recipient, for the docs."""
    unverified: tuple[str, ...] = ()
    """Facts above that the vendor's documentation does not state (conservative guesses)."""
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorSpec:
    """Everything the gateway states about one vendor API, in one place."""

    vendor: str
    """Vendor id used in configuration (`vendor = "..."`) and ListBackends."""
    display_name: str
    """How people name it (docs, messages)."""
    path: str
    """The documented batch-send endpoint path, appended to the backend's base_url."""
    limits: VendorLimits
    id_rule: IdRule
    credential_fields: Mapping[str, type]
    """Backend config keys holding the credentials, with their types."""
    app_id_field: str
    """The credential naming the vendor app whose quota a call counts against (backends
    on the same app share one quota across replicas, CONTRACT §5 rule 14)."""
    sandbox_credentials: Mapping[str, Any]
    """The fixed sandbox credentials (CONTRACT §2): the emulator's, sandbox mode's."""
    sender_required: bool
    """Whether BatchSendRequest.sender_id must be set (else an empty one means the app)."""
    capabilities: Capabilities
    regions: Mapping[str, Region] = field(default_factory=dict)
    """The vendor's documented domains by region name (config key `region`)."""
    default_base_url: str = ""
    """The base URL of a backend that names neither `base_url` nor `region`; empty = one
    of them is required."""
    refusal_statuses: RefusalStatuses = field(default_factory=RefusalStatuses)
    own_options: Mapping[str, str] = field(default_factory=dict)
    """SendOptions fields only this vendor takes → the vendor field each becomes; every
    other vendor refuses them by name."""
    recall: RecallSpec | None = None
    """The vendor's recall API, when the gateway can recall through it
    (capabilities.recall)."""

    def __post_init__(self) -> None:
        if self.capabilities.recall != (self.recall is not None):
            raise ValueError(f"{self.vendor}: capabilities.recall needs a RecallSpec, and only it")
        if set(self.sandbox_credentials) != set(self.credential_fields):
            raise ValueError(f"{self.vendor}: sandbox credentials must fill credential_fields")
        for key, kind in self.credential_fields.items():
            if not isinstance(self.sandbox_credentials[key], kind):
                raise ValueError(f"{self.vendor}: sandbox credential {key} must be {kind}")
        if self.app_id_field not in self.credential_fields:
            raise ValueError(f"{self.vendor}: app_id_field must be a credential field")
