"""``python -m harness compare``: ratios per matching row, --fail-above, rows only in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main as cli_main
from harness.errors import UserError
from harness.report.compare import compare_results, parse_threshold
from harness.spec import Result

MiB = 2**20


def row(trick: str, speed: float | None = 1000.0, mem_mib: float = 100.0, val: float = 0.2, repeat: int = 0,
        status: str = "ok", accelerator: str = "cpu") -> Result:
    ok = status == "ok"
    return Result(run_id=f"ae-{accelerator}-{trick}-r{repeat}", trick=trick, workload="ae", dataset="digits",
                  accelerator=accelerator, repeat=repeat, status=status, reason="" if ok else "needs a GPU",
                  samples_per_s=speed if ok else None, samples_per_s_iqr=speed * 0.01 if ok and speed else None,
                  noisy=False if ok else None, peak_mem_bytes=int(mem_mib * MiB) if ok else None,
                  train_loss=val * 1.1 if ok else None, val_loss=val if ok else None, test_loss=val if ok else None)


def write_run(path: Path, results: list[Result]) -> Path:
    path.mkdir(parents=True)
    (path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in results))
    (path / "env.json").write_text(json.dumps({}))
    return path


REFERENCE = [row("baseline", 1000), row("fast", 2000, mem_mib=120), row("gone", 1500), row("gpu-only", status="skipped")]


def test_same_numbers_exit_0_and_show_ratios_and_rows_in_one_run_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", REFERENCE)
    b = write_run(tmp_path / "b", [row("baseline", 1050), row("fast", 1900, mem_mib=125), row("new", 500),
                                   row("gpu-only", status="skipped")])
    assert cli_main(["compare", str(a), str(b), "--fail-above", "10%"]) == 0
    out = capsys.readouterr().out
    assert "1,000 -> 1,050 (1.05x)" in out and "2,000 -> 1,900 (0.95x)" in out and "120 -> 125 (1.04x)" in out
    assert "Only in A" in out and "gone (ae, digits, cpu): ok" in out
    assert "Only in B" in out and "new (ae, digits, cpu): ok" in out
    assert "No throughput drop or peak memory growth beyond 10%" in out


def test_a_throughput_drop_or_memory_growth_beyond_the_threshold_exits_1_naming_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a", REFERENCE)
    b = write_run(tmp_path / "b", [row("baseline", 850), row("fast", 2000, mem_mib=140), row("gone", 1500)])
    assert cli_main(["compare", str(a), str(b), "--fail-above", "0.1"]) == 1
    captured = capsys.readouterr()
    assert "baseline (ae, digits, cpu): throughput dropped 15.0%" in captured.out
    assert "fast (ae, digits, cpu): peak memory grew 16.7%" in captured.out
    assert "gone" not in captured.err  # unchanged rows are not named
    assert "baseline" in captured.err and "fast" in captured.err
    # without --fail-above, compare only reports
    assert cli_main(["compare", str(a), str(b)]) == 0
    # a looser threshold lets both through
    assert cli_main(["compare", str(a), str(b), "--fail-above", "20%"]) == 0


def test_repeats_are_compared_through_their_median(tmp_path: Path) -> None:
    a = [row("baseline", s, repeat=i) for i, s in enumerate([1000, 1010, 100])]  # one outlier repeat
    b = [row("baseline", s, repeat=i) for i, s in enumerate([990, 1000, 1020])]
    comparison = compare_results(a, b, threshold=0.1)
    assert comparison.matched.loc[0, "samples_per_s_ratio"] == pytest.approx(1000 / 1000)
    assert comparison.regressions == []


def test_status_changes_are_shown_and_not_counted_as_ratios() -> None:
    comparison = compare_results([row("fast", 1000)], [row("fast", status="failed")], threshold=0.1)
    assert comparison.matched.loc[0, "status_b"] == "failed"
    assert comparison.regressions == []  # no throughput to compare; `run` itself exits 1 on the failure


@pytest.mark.parametrize(("text", "value"), [("10%", 0.1), ("0.1", 0.1), ("2.5 %", 0.025), ("150%", 1.5), ("1", 1.0)])
def test_thresholds_read_as_percent_or_fraction(text: str, value: float) -> None:
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["10", "abc", "0", "-5%", "nan"])
def test_bad_thresholds_are_user_errors(text: str) -> None:
    with pytest.raises(UserError, match="--fail-above"):
        parse_threshold(text)


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "a", REFERENCE)
    assert cli_main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["compare", str(a), str(tmp_path / "empty")]) == 2
    assert cli_main(["compare", str(a), str(a), "--fail-above", "lots"]) == 2


def _repeats(trick: str, speeds: list[float], warnings: list[str] | None = None) -> list[Result]:
    rows = []
    for repeat, speed in enumerate(speeds):
        result = row(trick, speed, repeat=repeat)
        result.block_samples_per_s = [speed * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
        if warnings:
            result.details["warnings"] = warnings
        rows.append(result)
    return rows


def test_a_drop_past_the_threshold_is_flagged_only_when_its_interval_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.report.compare import format_comparison

    a = _repeats("baseline", [1000, 1010, 990])
    clear = compare_results(a, _repeats("baseline", [700, 710, 690]), threshold=0.1)
    assert len(clear.regressions) == 1
    regression = clear.regressions[0]
    assert regression.what == "throughput" and regression.low <= 0.7 <= regression.high < 1.0
    assert "95% CI" in str(regression)
    # an 15% drop in the median that the repeats' spread cannot tell from noise: named, not flagged
    noisy = compare_results(a, _repeats("baseline", [850, 600, 1150]), threshold=0.1)
    assert noisy.regressions == []
    text = format_comparison(noisy, "a", "b", 0.1)
    assert "that its interval confirms" in text and "includes 1.00: not flagged" in text


def test_contention_warnings_on_either_side_are_named_with_the_regression() -> None:
    from harness.report.compare import format_comparison

    warning = ["other processes used 60% of the machine's CPU time during fit: ..."]
    comparison = compare_results(_repeats("baseline", [1000, 1000, 1000], warning), _repeats("baseline", [160, 170, 165], warning), 0.1)
    assert comparison.regressions and comparison.regressions[0].contention == "A and B"
    text = format_comparison(comparison, "a", "b", 0.1)
    assert "A and B's rows carried contention warnings" in text and "Rows whose runs carried contention warnings" in text
