"""docs/configuration.md and the README's key table against the keys `_config` accepts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from imgate.config import load as _config
from imgate.vendors.registry import VENDORS

ROOT = Path(__file__).resolve().parent.parent
_TYPES = {
    "string": str,
    "integer": int,
    "float": float,
    "table": dict,
    "boolean": bool,
    "list": list,
}
_TABLES = ("top", *_config._SECTION_KEYS, "callers", "tls")


def _table(text: str, header: str) -> list[list[str]]:
    """Rows (cells) of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _accepted() -> dict[tuple[str, str], type]:
    """(key, "top" | "backend" | a table such as "store") -> type, as the loader checks them."""
    keys: dict[tuple[str, str], type] = {(k, "top"): t for k, t in _config._TOP_KEYS.items()}
    keys.update({(k, "backend"): t for k, t in _config._BACKEND_KEYS.items()})
    for table, known in _config._SECTION_KEYS.items():
        keys.update({(k, table): t for k, (_, t) in known.items()})
    keys.update({(k, "callers"): t for k, t in _config._CALLER_KEYS.items()})
    keys.update({(k, "tls"): t for k, t in _config._TLS_KEYS.items()})
    for plugin in VENDORS:
        keys.update({(k, "backend"): t for k, t in plugin.spec.credential_fields.items()})
    return keys


def _documented() -> dict[tuple[str, str], tuple[type, str]]:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = {}
    for key, where, kind, default, _ in _table(text, "| key | table | type |"):
        table = where if where in _TABLES else "backend"
        documented[(key.strip("`"), table)] = (_TYPES[kind], default)
    return documented


def test_the_reference_lists_exactly_the_accepted_keys_with_their_types() -> None:
    documented = {key: kind for key, (kind, _) in _documented().items()}
    assert documented == _accepted()


def test_the_readme_table_lists_every_accepted_key() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {
        (name, where if where in _TABLES else "backend")
        for cells in _table(text, "| key | where |")
        for name, where in ((n, cells[1]) for n in re.findall(r"`([a-z0-9_]+)`", cells[0]))
    }
    assert listed == set(_accepted()) - {("backends", "top")}


def _numbers(default: str) -> list[float]:
    return [float(part) for part in re.findall(r"\d+(?:\.\d+)?", default)]


def test_top_level_defaults_match_the_code() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(_config.GatewayConfig)}
    for (key, table), (_, default) in _documented().items():
        if table in _config._SECTION_KEYS:
            key = _config._SECTION_KEYS[table][key][0]
        elif table != "top":
            continue
        value = fields.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert _numbers(default) == [fields[key]], key


@pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
def test_backend_defaults_match_each_vendors_limits(plugin: object) -> None:
    vendor = plugin.vendor  # type: ignore[attr-defined]
    position = [p.vendor for p in VENDORS].index(vendor)
    backend = _config.sandbox_config("http://127.0.0.1:1").backend(vendor)
    assert backend is not None
    checked = 0
    for (key, table), (_, default) in _documented().items():
        numbers = _numbers(default)
        if table != "backend" or not numbers or not hasattr(backend, key):
            continue
        expected = numbers[position] if len(numbers) == len(VENDORS) else numbers[0]
        assert getattr(backend, key) == expected, (vendor, key)
        checked += 1
    assert checked >= 9
