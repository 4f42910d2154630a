"""The benchmark's own logic, without running it: configs it generates, verdicts, summaries.

The benchmark itself runs as `python -m bench --quick` (about two minutes); these tests keep
its generated gateway and sandbox configurations in step with the product's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._profile import summarize
from bench._report import Row, Target, table
from bench._sandbox_proc import sandbox_config
from bench._stages.quotas import QUOTAS, SLEEP_OUT_QUOTAS, quota_backends, sleep_out_backends
from bench._workload import VENDORS, Backend, Quota, gateway_toml, sandbox_json
from imgate.config.load import load_config
from imgate.config.model import BackendConfig
from imgate.sandbox import FaultRule
from imgate.vendors.base.emulation import VendorSettings


def _both_sides(
    tmp_path: Path, backends: list[Backend], quotas: dict[str, tuple[Quota, str]]
) -> Iterator[tuple[str, Quota, BackendConfig, VendorSettings]]:
    """(vendor, quota, gateway's backend, sandbox's vendor) for each quota, the limits and
    windows checked equal on both sides first."""
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", backends))
    config = load_config(path, {})
    sandbox = sandbox_config(json.loads(sandbox_json(backends)))
    for vendor, (quota, _) in quotas.items():
        gateway_side = config.backend(vendor)
        assert gateway_side is not None
        vendor_side = sandbox.vendors[vendor]
        assert gateway_side.call_limit == vendor_side.call_limit == quota.call_limit
        assert gateway_side.call_window_s == vendor_side.call_window_s == quota.call_window_s
        assert gateway_side.recipient_limit == (vendor_side.recipient_limit or 0)
        yield vendor, quota, gateway_side, vendor_side


def test_quota_config_is_identical_in_gateway_and_sandbox(tmp_path: Path) -> None:
    for _, quota, gateway_side, vendor_side in _both_sides(tmp_path, quota_backends(), QUOTAS):
        assert gateway_side.block_s == vendor_side.block_s == quota.block_s


def test_stage_7_windows_match_in_gateway_and_sandbox(tmp_path: Path) -> None:
    """Stage 7: the same windows on both sides; only the sandbox's block follows the
    vendor (Tencent does not block; the gateway's pause after a refusal must be > 0)."""
    sandbox_blocks = {}
    sides = _both_sides(tmp_path, sleep_out_backends(), SLEEP_OUT_QUOTAS)
    for vendor, quota, gateway_side, vendor_side in sides:
        assert gateway_side.recipient_window_s == quota.recipient_window_s
        assert gateway_side.block_s == quota.block_s
        sandbox_blocks[vendor] = vendor_side.block_s
    assert sandbox_blocks == {
        "tencent": 0.0,
        "yunxin_v1": SLEEP_OUT_QUOTAS["yunxin_v1"][0].block_s,
    }


def test_quotas_off_on_both_sides(tmp_path: Path) -> None:
    backends = [Backend(vendor) for vendor in VENDORS]
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", backends))
    config = load_config(path, {})
    assert {b.name for b in config.backends} == set(VENDORS)
    assert all(b.recipient_limit == 0 and b.call_limit >= 1_000_000 for b in config.backends)
    sandbox = sandbox_config(json.loads(sandbox_json(backends)))
    assert all(s.call_limit is None and s.recipient_limit is None for s in sandbox.vendors.values())


def test_sandbox_faults_reach_the_settings() -> None:
    latency = {"kind": "latency", "delay_s": 0.05}
    doc = json.loads(sandbox_json([Backend("tencent", faults=(latency,))]))
    settings = sandbox_config(doc).vendors["tencent"]
    assert settings.faults == (FaultRule(kind="latency", delay_s=0.05),)


@pytest.mark.parametrize(
    ("target", "ratio", "met", "gross"),
    [
        (Target("<=", 3, 6), 2.9, True, False),
        (Target("<=", 3, 6), 4.0, False, False),
        (Target("<=", 3, 6), 6.1, False, True),
        (Target(">=", 10, 5), 12.0, True, False),
        (Target(">=", 10, 5), 7.0, False, False),
        (Target(">=", 10, 5), 4.9, False, True),
        (Target("<=", 0, 0, unit=""), 1, False, True),
    ],
)
def test_target_verdicts(target: Target, ratio: float, met: bool, gross: bool) -> None:
    row = Row(3, "figure", "params", "measured", "baseline", ratio, target)
    assert row.verdict == ("pass" if met else "FAIL")
    assert row.gross is gross


def test_rows_without_target_are_information_only() -> None:
    row = Row(8, "memory", "params", "3 MB", "-", None)
    assert (row.verdict, row.gross) == ("info", False)
    lines = table([row, row]).splitlines()
    assert len(lines) == 4
    assert lines[-1].endswith("| info |")


def test_profile_summary_counts_self_and_total(tmp_path: Path) -> None:
    raw = tmp_path / "profile.raw"
    raw.write_text(
        "main (/x/server/imgate/cli/main.py:1);send (/x/server/imgate/pipeline/dispatch.py:9) 3\n"
        "main (/x/server/imgate/cli/main.py:1);parse (/x/server/imgate/translators/t.py:2) 1\n"
    )
    self_part, _, total_part = summarize(raw, top=2).partition("by total")
    assert "4 samples" in self_part
    assert " 75.0%  send (imgate/pipeline/dispatch.py)" in self_part
    assert " 25.0%  parse (imgate/translators/t.py)" in total_part
    assert "cli.py" not in total_part  # an entry frame, on every stack: no information


def test_stage_12_quota_is_identical_in_gateway_and_sandbox(tmp_path: Path) -> None:
    from bench._stages.replicas import replica_backends

    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", replica_backends()))
    (backend,) = replica_backends()
    assert backend.quota is not None
    config = load_config(path, {}).backend(backend.vendor)
    vendor_side = sandbox_config(json.loads(sandbox_json(replica_backends()))).vendors[
        backend.vendor
    ]
    assert config is not None
    assert config.call_limit == vendor_side.call_limit == backend.quota.call_limit
    assert config.call_window_s == vendor_side.call_window_s == backend.quota.call_window_s
    assert config.request_timeout_s == backend.request_timeout_s


def test_stage_12_quota_use_is_one_when_each_call_is_a_window_after_its_limit_th() -> None:
    from bench._stages.replicas import _quota_use

    # Bursts of 4 calls every 1.0 s, limit 4 per 1 s: the quota in full, whatever the bursts.
    arrivals = [second + 0.001 * n for second in range(10) for n in range(4)]
    assert _quota_use(arrivals, 4, 1.0) == pytest.approx(1.0, abs=1e-6)
    slow = [second * 1.25 + 0.001 * n for second in range(10) for n in range(4)]
    assert _quota_use(slow, 4, 1.0) == pytest.approx(0.8, abs=1e-3)


def test_stage_5_parts_split_the_wall_time_and_count_full_windows() -> None:
    from bench._stages.quotas import quota_run_parts

    # 4 windows of 2 calls of 500 (limit 1,000 per 1 s), each window 10 ms late on the last.
    calls = [(100.0 + k * 1.01 + 0.002 * n, 500) for k in range(4) for n in range(2)]
    parts = quota_run_parts(calls, started=99.95, ended=103.10, limit=1_000, window_s=1.0)
    assert parts.startup_s == pytest.approx(0.05)
    assert parts.paced_s == pytest.approx(3.03)
    assert parts.drain_s == pytest.approx(103.10 - 103.03)
    # Windows [101, 102) and [102, 103) end by the last arrival (103.032); [103, 104) not.
    assert parts.window_uses == (1.0, 1.0)
    # A window that comes up short is counted short: drop one call of the second window.
    short = calls[:2] + calls[3:]
    assert quota_run_parts(short, 99.95, 103.10, 1_000, 1.0).window_uses == (0.5, 1.0)


def test_stage_7_last_window_starts_past_the_full_windows() -> None:
    from bench._stages.quotas import quota_run_parts

    # 5 calls, limit 2: windows of 2, 2, 1; the last window's call is the fifth.
    calls = [(float(t), 1) for t in (0, 0.1, 1.2, 1.3, 2.4)]
    parts = quota_run_parts(calls, started=-0.1, ended=2.5, limit=2, window_s=1.0)
    assert parts.paced_s == pytest.approx(2.4)
    assert parts.drain_s == pytest.approx(0.1)
    assert parts.window_uses == (1.0,)


def test_stage_14_reads_store_counters_summed_over_labels_or_none() -> None:
    from bench._platform_run import counters_in

    text = (
        "# HELP imgate_store_commits_total Store commits.\n"
        "# TYPE imgate_store_commits_total counter\n"
        'imgate_store_commits_total{store="sqlite",kind="write"} 7.0\n'
        'imgate_store_commits_total{store="sqlite",kind="read"} 3.0\n'
    )
    assert counters_in(text) == {
        "imgate_store_commits_total": 10.0,
        "imgate_store_statements_total": None,
    }
    assert set(counters_in("").values()) == {None}


def test_stage_14_gateways_derive_their_calls_in_flight(tmp_path: Path) -> None:
    """Stage 14 leaves `max_in_flight` out (0 = derived from the call quota and the round
    trip); quotas off in the grid, Tencent's published quota in the latency round."""
    from bench._platform_run import TENCENT_QUOTA, latency_backends, platform_backends

    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", platform_backends()))
    assert "max_in_flight" not in path.read_text()
    (backend,) = load_config(path, {}).backends
    assert backend.max_in_flight == 0
    assert backend.call_limit >= 1_000_000
    assert backend.recipient_limit == 0
    path.write_text(gateway_toml("http://127.0.0.1:9", latency_backends()))
    (backend,) = load_config(path, {}).backends
    assert backend.max_in_flight == 0
    assert (backend.call_limit, backend.call_window_s) == (200, 1.0)
    assert (backend.recipient_limit, backend.recipient_window_s) == (12_000, 60.0)
    assert TENCENT_QUOTA.call_limit == backend.call_limit


def test_other_stages_keep_a_fixed_max_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", [Backend("tencent")]))
    (backend,) = load_config(path, {}).backends
    assert backend.max_in_flight == 8


def test_stage_14_sustained_rate_ignores_a_quota_s_first_window() -> None:
    """Quota-bound: 200 ends in the first 0.2 s of each 1.05 s cycle, so a run's wall time
    depends on where it stops; the span estimator gives 200 per cycle either way."""
    from bench._platform_run import Tally

    for requests in (512, 600, 1_024):
        ends = [k // 200 * 1.05 + (k % 200) * 0.001 for k in range(requests)]
        tally = Tally(requests=requests, wall_s=ends[-1], ends_s=[ends])
        assert tally.sustained_per_s(200) == pytest.approx(200 / 1.05)
    steady = Tally(requests=500, wall_s=1.0, ends_s=[[k / 500 for k in range(500)]])
    assert steady.sustained_per_s(200) == pytest.approx(500)
    assert Tally(requests=10, wall_s=2.0, ends_s=[[0.1] * 10]).sustained_per_s(200) == 5


def test_stage_14_reads_gauges_summed_over_labels() -> None:
    from bench._platform_run import counters_in

    text = (
        "# TYPE imgate_tracked_entries gauge\n"
        'imgate_tracked_entries{structure="batch_runs"} 2.0\n'
        'imgate_tracked_entries{structure="orphans"} 1.0\n'
        "# TYPE imgate_vendor_in_flight_limit gauge\n"
        'imgate_vendor_in_flight_limit{backend="tencent"} 21.0\n'
    )
    names = ("imgate_tracked_entries", "imgate_vendor_in_flight_limit")
    assert counters_in(text, names) == {
        "imgate_tracked_entries": 3.0,
        "imgate_vendor_in_flight_limit": 21.0,
    }


def test_quick_mode_fails_only_on_a_gross_regression_that_repeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bench.__main__ as bench_main

    target = Target("<=", 2.0, 3.0)
    noisy = Row(14, "noisy cell", "", "", "", 3.05, target)
    real = Row(3, "real regression", "", "", "", 4.0, target)
    reruns: list[set[int]] = []

    def run_again(plan: object, stages: set[int], profile_to: object) -> list[Row]:
        reruns.append(stages)
        return [Row(14, "noisy cell", "", "", "", 2.2, target), real]

    monkeypatch.setattr(bench_main, "run", run_again)
    assert bench_main.confirm(bench_main.QUICK, [noisy, real]) == [real]
    assert reruns == [{1, 2, 3, 14}]
