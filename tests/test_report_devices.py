"""Rows from two device names are never compared with each other: ratios, verdicts, time to target,
``compare`` and the report's groups (with their Pareto fronts) all pair a trick with a baseline of
the same device name only, and a trick with no same-device baseline says so. Pure: synthetic rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.report.build import build_report
from harness.report.compare import compare_results
from harness.report.devices import with_devices
from harness.report.table import summary_frame
from harness.report.target import default_targets
from harness.report.verdicts import CANNOT_TELL, by_group, judge
from harness.spec import BASELINE, Result

A100, H100 = "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"


def row(trick: str, repeat: int, device: str, speed: float, val: float = 0.1, status: str = "ok", wall_s: float = 10.0) -> Result:
    rates = list(speed * np.exp(np.random.default_rng(repeat).normal(0.0, 0.01, size=30)))
    ok = status == "ok"
    return Result(
        run_id=f"ae-gpu-{trick}-{device[:11]}-r{repeat}", trick=trick, workload="ae", dataset="digits", accelerator="gpu",
        repeat=repeat, status=status, device_name=device if ok else "", host=f"node-{device[7:11]}", batch_size=64,
        samples_per_s=float(np.median(rates)) if ok else None, blocks_measured=30 if ok else None,
        block_samples_per_s=rates if ok else [], step_time_ms=6.4e5 / speed if ok else None, steps=400 if ok else None,
        peak_mem_bytes=500_000_000 if ok else None, mem_kind="cuda_max_allocated",
        val_loss=val if ok else None, test_loss=val if ok else None, wall_s=wall_s, fit_s=wall_s - 1, epochs=10,
        curve=[{"epoch": 0, "step": 400, "samples": 25600, "train_s": 8.0, "fit_s": 9.0, "val_loss": val}] if ok else [],
    )


def mixed_cluster() -> list[Result]:
    """A100 nodes ran the baseline and the trick (1.2x faster there); H100 nodes ran the trick only,
    3x the A100 baseline's speed, in 4 s of wall time instead of 10: any cross-device ratio would show up
    as about 3x, and a cross-device Pareto front would hold the H100 row alone."""
    rows = []
    for repeat in range(3):
        rows += [row(BASELINE, repeat, A100, 10_000.0), row("fast", repeat, A100, 12_000.0), row("fast", repeat, H100, 30_000.0, wall_s=4.0)]
    return rows


def test_ratios_are_taken_against_the_same_devices_baseline_only() -> None:
    summary = summary_frame(mixed_cluster()).set_index(["device_name", "trick"])
    assert math.isclose(summary.loc[(A100, "fast"), "samples_per_s_ratio"], 1.2, rel_tol=0.02)
    assert math.isnan(summary.loc[(H100, "fast"), "samples_per_s_ratio"])  # no H100 baseline: no ratio
    assert math.isnan(summary.loc[(H100, "fast"), "val_loss_ratio"])


def test_a_verdict_never_pairs_a_trick_with_another_devices_baseline() -> None:
    verdicts = {v.device: v for v in judge(mixed_cluster(), changes_budget=())}
    assert set(verdicts) == {A100, H100}
    assert math.isclose(verdicts[A100].speed.ratio, 1.2, rel_tol=0.02)
    assert verdicts[H100].category == CANNOT_TELL and verdicts[H100].text == f"cannot tell: no baseline run on this device ({H100}) finished to compare with"
    assert set(by_group(list(verdicts.values()))) == {f"ae on gpu ({A100}), dataset digits", f"ae on gpu ({H100}), dataset digits"}


def test_targets_and_report_groups_and_pareto_fronts_are_per_device(tmp_path: Path) -> None:
    results = mixed_cluster() + [row(BASELINE, 0, H100, 0, val=0.5, status="failed")]  # unnamed, in a mixed cell
    assert set(default_targets(results)) == {("ae", "digits", "gpu", A100)}
    report = build_report(tmp_path, results, {}, draw=False)
    groups = {g.key[3]: g for g in report.groups}
    assert list(groups) == ["", A100, H100]  # one group per device name, in the summary's sorted order
    assert {d: g.heading for d, g in groups.items()} == {
        A100: f"ae on gpu ({A100}), dataset digits", H100: f"ae on gpu ({H100}), dataset digits", "": "ae on gpu (unnamed device), dataset digits"}
    assert {d: list(g.summary["trick"]) for d, g in groups.items()} == {A100: [BASELINE, "fast"], H100: ["fast"], "": [BASELINE]}
    assert groups[H100].pareto == ["fast"] and groups[A100].pareto == [BASELINE, "fast"]  # not beaten by the H100


def test_a_row_without_a_device_name_joins_its_cells_only_device() -> None:
    failed = row(BASELINE, 1, A100, 0, status="failed")
    (filled,) = [r for r in with_devices([row(BASELINE, 0, A100, 1.0), failed]) if r.status == "failed"]
    assert filled.device_name == A100 and failed.device_name == ""  # a copy; the row itself is untouched


def test_compare_never_matches_rows_of_two_devices() -> None:
    on_a100 = [r for r in mixed_cluster() if r.device_name == A100]
    on_h100 = [row(t, r, H100, 30_000.0) for r in range(3) for t in (BASELINE, "fast")]
    comparison = compare_results(on_a100, on_h100, threshold=0.1)
    assert comparison.matched.empty and not comparison.regressions
    assert set(comparison.only_a["device_name"]) == {A100} and set(comparison.only_b["device_name"]) == {H100}
    same = compare_results(on_a100, on_a100, threshold=0.1)
    assert len(same.matched) == 2 and set(same.matched["device_name"]) == {A100}
