"""Result rows, their verdicts, the table and the JSON file.

A row's `ratio` is what is judged: against its `target` (pass / FAIL, both modes) and
against its `gate`, the gross-regression line (twice as far as the target) that fails
quick mode in CI. Rows without a target are reported for information.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Target:
    """`ratio op value` passes; past `gate` is a gross regression."""

    op: Literal["<=", ">="]
    value: float
    gate: float
    unit: str = "x"

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def gross(self, ratio: float) -> bool:
        return ratio > self.gate if self.op == "<=" else ratio < self.gate

    def __str__(self) -> str:
        symbol = "≤" if self.op == "<=" else "≥"
        return f"{symbol} {_number(self.value)}{self.unit}"


@dataclass(frozen=True)
class Row:
    """One figure of the table."""

    stage: int
    figure: str
    params: str
    measured: str
    baseline: str
    ratio: float | None
    target: Target | None = None
    data: dict[str, Any] = field(default_factory=dict)
    """Raw measurements, for the JSON file."""

    @property
    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return "info"
        return "pass" if self.target.met(self.ratio) else "FAIL"

    @property
    def gross(self) -> bool:
        return self.target is not None and self.ratio is not None and self.target.gross(self.ratio)

    def ratio_text(self) -> str:
        if self.ratio is None:
            return "-"
        unit = self.target.unit if self.target is not None else "x"
        return f"{_number(self.ratio)}{unit}"


_HEADERS = ("#", "figure", "parameters", "measured", "baseline", "ratio", "target", "result")


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal, pasteable into RESULTS.md)."""
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    for row in rows:
        cells = (
            str(row.stage),
            row.figure,
            row.params,
            row.measured,
            row.baseline,
            row.ratio_text(),
            str(row.target) if row.target is not None else "-",
            row.verdict,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    doc = {
        **meta,
        "rows": [
            {
                **{k: v for k, v in asdict(row).items() if k != "target"},
                "target": str(row.target) if row.target is not None else None,
                "gate": row.target.gate if row.target is not None else None,
                "verdict": row.verdict,
                "gross_regression": row.gross,
            }
            for row in rows
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
