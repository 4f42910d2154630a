"""Fault injection: ordered rules, each with a use count and a probability.

For each valid vendor call the rules are tried in order; the first one that applies (has
uses left and wins its probability draw) is consumed once and decides the misbehaviour.
The draws come from the sandbox's seeded RNG so that a seeded run is reproducible.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

from imgate.vendors.base.emulation import FAULT_KINDS, FaultRule


class FaultPlan:
    """The live fault rules of one vendor."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._rules: list[FaultRule] = []

    def set_rules(self, rules: Sequence[FaultRule]) -> None:
        """Replace every rule."""
        self._rules = list(rules)

    def rules(self) -> list[FaultRule]:
        """Rules still in force; `times` is what remains of each rule's uses."""
        return [r for r in self._rules if r.times is None or r.times > 0]

    def draw(self, api: str = "send") -> FaultRule | None:
        """The rule that applies to this call of `api` (send or recall), consuming one of
        its uses; None = no fault."""
        for index, rule in enumerate(self._rules):
            if rule.times is not None and rule.times <= 0:
                continue
            if rule.api is not None and rule.api != api:
                continue
            # probability 1.0 must apply without drawing, so seeded sequences stay aligned
            # with the rules that are actually random.
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            if rule.times is not None:
                self._rules[index] = dataclasses.replace(rule, times=rule.times - 1)
            return rule
        return None


def fault_rule_to_json(rule: FaultRule) -> dict[str, Any]:
    """A rule as the control endpoint shows it (defaults applied to delay_s)."""
    return {
        "kind": rule.kind,
        "api": rule.api,
        "delay_s": rule.effective_delay_s,
        "times": rule.times,
        "probability": rule.probability,
    }


def fault_rule_from_json(doc: Any) -> FaultRule:
    """Parse one rule of a PUT /sandbox/faults body; ValueError says what is wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError("a fault rule must be a JSON object")
    unknown = set(doc) - {"kind", "api", "delay_s", "times", "probability"}
    if unknown:
        raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
    kind = doc.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {list(FAULT_KINDS)}")
    delay_s = doc.get("delay_s")
    if delay_s is not None and not _is_number(delay_s):
        raise ValueError("delay_s must be a number or null")
    times = doc.get("times")
    if times is not None and not (isinstance(times, int) and not isinstance(times, bool)):
        raise ValueError("times must be an integer or null")
    probability = doc.get("probability", 1.0)
    if not _is_number(probability):
        raise ValueError("probability must be a number")
    api = doc.get("api")
    if api not in (None, "send", "recall"):
        raise ValueError('api must be "send", "recall" or null')
    return FaultRule(
        kind=kind,
        api=api,
        delay_s=None if delay_s is None else float(delay_s),
        times=times,
        probability=float(probability),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
