"""The retry policy, as a table: disposition, attempts, time -> action."""

from __future__ import annotations

import pytest

from imgate.pipeline.retry import BACKOFF_BASE_S, BACKOFF_CAP_S, Action, Decision, backoff_s, decide
from imgate.vendors.base.translator import Disposition

D = Disposition
CASES = [
    # disposition, attempts, max, refreshed, time left, jitter -> decision
    (D.DONE, 1, 5, False, None, 0.5, Decision(Action.RECORD)),
    (D.DONE, 5, 5, True, 0.0, 0.5, Decision(Action.RECORD)),
    (D.AMBIGUOUS, 1, 5, False, None, 0.5, Decision(Action.UNCERTAIN)),
    (D.AMBIGUOUS, 1, 5, False, 100.0, 0.0, Decision(Action.UNCERTAIN)),
    (D.REFRESH_AUTH, 1, 5, False, None, 0.5, Decision(Action.REFRESH)),
    (D.REFRESH_AUTH, 2, 5, True, None, 0.5, Decision(Action.GIVE_UP)),
    (D.RATE_LIMITED, 1, 5, False, None, 0.5, Decision(Action.RESEND, pause_backend=True)),
    (D.RATE_LIMITED, 5, 5, False, None, 0.5, Decision(Action.GIVE_UP, pause_backend=True)),
    (D.RETRY, 1, 5, False, None, 0.5, Decision(Action.RESEND, delay_s=0.2)),
    (D.RETRY, 3, 5, False, None, 1.0, Decision(Action.RESEND, delay_s=1.6)),
    (D.RETRY, 4, 5, False, 10.0, 0.0, Decision(Action.RESEND, delay_s=0.0)),
    (D.RETRY, 5, 5, False, None, 0.5, Decision(Action.GIVE_UP)),
    (D.RETRY, 1, 5, False, 0.1, 0.5, Decision(Action.GIVE_UP)),  # backoff 0.2 > 0.1 left
    (D.RETRY, 1, 1, False, None, 0.5, Decision(Action.GIVE_UP)),
]


@pytest.mark.parametrize(
    ("disposition", "attempts", "max_attempts", "refreshed", "left", "jitter", "expected"), CASES
)
def test_decide(
    disposition: Disposition,
    attempts: int,
    max_attempts: int,
    refreshed: bool,
    left: float | None,
    jitter: float,
    expected: Decision,
) -> None:
    decision = decide(
        disposition,
        attempts=attempts,
        max_attempts=max_attempts,
        refreshed_auth=refreshed,
        time_left_s=left,
        jitter=jitter,
    )
    assert decision.action is expected.action
    assert decision.pause_backend == expected.pause_backend
    assert decision.delay_s == pytest.approx(expected.delay_s)


def test_backoff_is_capped_full_jitter() -> None:
    assert backoff_s(1, 0.0) == 0.0
    assert backoff_s(1, 0.999) == pytest.approx(0.999 * BACKOFF_BASE_S * 2)
    assert backoff_s(30, 0.999) == pytest.approx(0.999 * BACKOFF_CAP_S)


@pytest.mark.parametrize("rate_refused", [False, True])
def test_a_final_answer_naming_a_rate_refusal_pauses_the_backend(rate_refused: bool) -> None:
    """Fidelity 2 (issue 22): a recipient refused for rate inside a final answer ends
    UNCERTAIN (never resent) and the backend pauses as after a refused call."""
    decision = decide(
        D.DONE,
        attempts=1,
        max_attempts=5,
        refreshed_auth=False,
        time_left_s=None,
        jitter=0.5,
        rate_refused=rate_refused,
    )
    assert decision == Decision(Action.RECORD, pause_backend=rate_refused)
