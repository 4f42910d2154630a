"""The retry policy: what happens to a chunk after one vendor answer. Pure: no I/O, no clock.

    disposition    attempts left?  ->  action
    DONE                               RECORD      the vendor's per-recipient answer
                                                   (pause=True when it names a recipient
                                                   refused for rate: rate_refused)
    AMBIGUOUS                          UNCERTAIN   may have been processed: never resent
    REFRESH_AUTH   not refreshed yet   REFRESH     new credentials, send again (once)
    RATE_LIMITED   yes                 RESEND      after the backend pause (pause=True)
    RATE_LIMITED   no                  GIVE_UP     pause=True all the same: the app is blocked
    RETRY          yes, backoff fits   RESEND      after `delay_s` (full-jitter backoff)
    RETRY          no, or no time      GIVE_UP     FAILED with the last reason

Deadlines are the quota wait's business: a resend that cannot get quota in time gives up
there. Only the backoff is checked here, because it is slept before asking for quota.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from imgate.vendors.base.translator import Disposition

BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0


class Action(enum.Enum):
    """What the dispatcher does next with the chunk."""

    RECORD = "record"
    UNCERTAIN = "uncertain"
    REFRESH = "refresh"
    RESEND = "resend"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer: the action, the backoff before a resend, whether to pause."""

    action: Action
    delay_s: float = 0.0
    pause_backend: bool = False


def backoff_s(attempts: int, jitter: float) -> float:
    """Full-jitter exponential backoff after `attempts` calls; `jitter` in [0, 1)."""
    return jitter * min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempts)


def decide(
    disposition: Disposition,
    *,
    attempts: int,
    max_attempts: int,
    refreshed_auth: bool,
    time_left_s: float | None,
    jitter: float,
    rate_refused: bool = False,
) -> Decision:
    """The next step for a chunk that has had `attempts` vendor calls.

    `time_left_s` is how long new calls may still start (None = no limit);
    `rate_refused`: the answer names a recipient refused for rate (CallResult.rate_refused).
    """
    if disposition is Disposition.DONE:
        return Decision(Action.RECORD, pause_backend=rate_refused)
    if disposition is Disposition.AMBIGUOUS:
        return Decision(Action.UNCERTAIN)
    if disposition is Disposition.REFRESH_AUTH:
        return Decision(Action.GIVE_UP if refreshed_auth else Action.REFRESH)
    if disposition is Disposition.RATE_LIMITED:
        action = Action.RESEND if attempts < max_attempts else Action.GIVE_UP
        return Decision(action, pause_backend=True)
    if attempts >= max_attempts:
        return Decision(Action.GIVE_UP)
    delay = backoff_s(attempts, jitter)
    if time_left_s is not None and delay >= time_left_s:
        return Decision(Action.GIVE_UP)
    return Decision(Action.RESEND, delay_s=delay)
