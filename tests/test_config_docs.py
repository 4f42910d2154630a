"""docs/configuration.md and the README's key table against the keys imgate.config accepts."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from imgate.config import access, backends, sections, webhooks
from imgate.config import load as _config
from imgate.config.model import GatewayConfig
from imgate.vendors.registry import VENDORS, VendorPlugin

ROOT = Path(__file__).resolve().parent.parent
_TYPES = {
    "string": str,
    "integer": int,
    "float": float,
    "table": dict,
    "boolean": bool,
    "list": list,
}
_TABLES = ("top", *sections.SECTION_KEYS, "callers", "tls", "webhooks")


def _table(text: str, header: str) -> list[list[str]]:
    """Rows (cells) of the markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        # A cell's escaped "\|" is the cell's own.
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))])
    return rows


def _accepted() -> dict[tuple[str, str], type]:
    """(key, "top" | "backend" | a table such as "store") -> type, as the loader checks them."""
    keys: dict[tuple[str, str], type] = {(k, "top"): t for k, t in _config.TOP_KEYS.items()}
    keys.update({(k, "backend"): t for k, t in backends.BACKEND_KEYS.items()})
    for table, known in sections.SECTION_KEYS.items():
        keys.update({(k, table): t for k, (_, t) in known.items()})
    keys.update({(k, "callers"): t for k, t in access.CALLER_KEYS.items()})
    keys.update({(k, "tls"): t for k, t in access.TLS_KEYS.items()})
    keys.update({(k, "webhooks"): t for k, t in webhooks.WEBHOOK_KEYS.items()})
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
    fields = {f.name: f.default for f in dataclasses.fields(GatewayConfig)}
    for (key, table), (_, default) in _documented().items():
        if table in sections.SECTION_KEYS:
            key = sections.SECTION_KEYS[table][key][0]
        elif table != "top":
            continue
        value = fields.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            assert _numbers(default) == [fields[key]], key


def _generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_vendor_docs.py"
    spec = importlib.util.spec_from_file_location("gen_vendor_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


@pytest.mark.parametrize("document", GENERATOR.DOCUMENTS)
def test_the_committed_vendor_tables_are_what_the_registry_generates(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    assert "<!-- BEGIN vendors:" in text, document
    assert GENERATOR.render(text) == text, f"run python scripts/gen_vendor_docs.py ({document})"


def _defaults_rows(document: str) -> dict[str, dict[str, str]]:
    """The per-vendor defaults table: vendor id -> {column name -> cell}, by name."""
    text = (ROOT / document).read_text(encoding="utf-8")
    header = "| " + " | ".join(GENERATOR.DEFAULTS_HEADER) + " |"
    names = [cell.strip("`") for cell in GENERATOR.DEFAULTS_HEADER]
    rows = {}
    for cells in _table(text, header):
        vendor = re.match(r"`([a-z0-9_]+)`", cells[0])
        assert vendor, cells
        rows[vendor.group(1)] = dict(zip(names, cells, strict=True))
    return rows


@pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
@pytest.mark.parametrize("document", ["docs/configuration.md", "README.md"])
def test_backend_defaults_match_each_vendors_limits(plugin: VendorPlugin, document: str) -> None:
    vendor = plugin.vendor
    row = _defaults_rows(document)[vendor]  # by the vendor's name, never by position
    backend = _config.sandbox_config("http://127.0.0.1:1").backend(vendor)
    assert backend is not None
    checked = 0
    for key, cell in row.items():
        if backends.BACKEND_KEYS.get(key) in (int, float):
            assert [getattr(backend, key)] == _numbers(cell), (vendor, key)
            checked += 1
    assert checked == 6
    assert set(_table_keys(row["credentials"])) == set(plugin.spec.credential_fields)
    assert set(_table_keys(row["region"])) == set(plugin.spec.regions)


def _table_keys(cell: str) -> list[str]:
    return re.findall(r"`([a-z0-9_]+)`", cell)


def test_per_vendor_keys_name_no_vendor_by_position() -> None:
    # A default such as "500 / 100 / 500" would silently mean other vendors once one is
    # added: per-vendor defaults live in the generated table, by name.
    tables = (
        ("docs/configuration.md", "| key | table | type |", 3),
        ("README.md", "| key | where |", 2),
    )
    for document, header, column in tables:
        text = (ROOT / document).read_text(encoding="utf-8")
        for cells in _table(text, header):
            assert not re.search(r"\d+\s*/\s*\d+\s*/\s*\d+", cells[column]), cells
            assert not re.search(r"\d.*,.*\d.*,.*\d", cells[column]), cells


@pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
@pytest.mark.parametrize("document", GENERATOR.DOCUMENTS)
def test_recall_defaults_match_each_vendors_recall_api(plugin: VendorPlugin, document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    header = "| " + " | ".join(GENERATOR.RECALL_HEADER) + " |"
    names = [cell.strip("`") for cell in GENERATOR.RECALL_HEADER]
    rows = {
        re.match(r"`([a-z0-9_]+)`", cells[0]).group(1): dict(zip(names, cells, strict=True))  # type: ignore[union-attr]
        for cells in _table(text, header)
    }
    backend = _config.sandbox_config("http://127.0.0.1:1").backend(plugin.vendor)
    assert backend is not None
    row = rows[plugin.vendor]  # by the vendor's name, never by position
    if plugin.spec.recall is None:
        assert row["recall API"] == "none"
        return
    for key in ("recall_call_limit", "recall_call_window_s", "recall_block_s"):
        assert [getattr(backend, key)] == _numbers(row[key]), (plugin.vendor, key)
    assert row["recallable"].startswith(str(backend.recallable).lower())
