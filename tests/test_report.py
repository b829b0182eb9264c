"""report.md / report.html / plots from hand-made results (and one tiny real run for the TB contract)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from harness.cli import main as cli_main
from harness.report import write_report
from harness.report.build import build_report
from harness.report.plots import pareto_mask
from harness.report.render import markdown_table
from harness.report.table import cell_marks, display_table, split_columns, summary_frame
from harness.report.tblogs import fit_curves, tb_version_dir
from harness.spec import Result, read_results

ENV = {"command": "python -m harness run", "time_utc": "2030-01-01T00:00:00+00:00", "git_commit": "abc123",
       "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "python": "3.11", "gpus": [],
       "versions": {"torch": "9.9.9-test", "lightning": "8.8.8-test"}}
MiB = 2**20


def curve(losses: list[float], seconds_per_epoch: float, samples_per_epoch: int = 1000, steps_per_epoch: int = 16) -> list[dict]:
    return [{"epoch": i, "step": steps_per_epoch * (i + 1), "samples": samples_per_epoch * (i + 1),
             "train_s": seconds_per_epoch * (i + 1) * 0.8, "fit_s": seconds_per_epoch * (i + 1), "val_loss": loss}
            for i, loss in enumerate(losses)]


def result(trick: str, speed: float | None, losses: list[float], seconds: float, mem_mib: float = 100.0,
           status: str = "ok", reason: str = "", noisy: bool = False, repeat: int = 0, **details) -> Result:
    ok = status == "ok"
    return Result(
        run_id=f"ae-cpu-{trick}-r{repeat}", trick=trick, workload="ae", dataset="digits", accelerator="cpu",
        repeat=repeat, status=status, reason=reason, device_name="Test CPU", precision="32-true" if ok else "",
        batch_size=64, loader="device", samples_per_s=speed if ok else None,
        samples_per_s_iqr=(speed * (0.3 if noisy else 0.02)) if ok else None,
        step_time_ms=(64_000 / speed) if ok else None, noisy=noisy if ok else None,
        peak_mem_bytes=int(mem_mib * MiB) if ok else None, mem_kind="max_rss" if ok else "",
        train_loss=losses[-1] * 1.1 if ok else None, val_loss=losses[-1] if ok else None,
        test_loss=losses[-1] * 0.9 if ok else None, wall_s=seconds * len(losses) + 0.5 if ok else 0.1,
        fit_s=seconds * len(losses) if ok else None, tune_s=0.0, steps=16 * len(losses) if ok else None,
        optimizer_steps=16 * len(losses) if ok else None, epochs=len(losses) if ok else None,
        seed=42, details={"dataset_reason": "digits requested", **details},
        curve=curve(losses, seconds) if ok else [],
    )


def hand_made() -> list[Result]:
    return [
        result("baseline", 10_000, [0.5, 0.3, 0.2], 1.0),
        result("fast", 20_000, [0.4, 0.2, 0.15], 0.5, mem_mib=150),  # reaches 0.2 at epoch 1
        result("slow", 5_000, [0.6, 0.5, 0.4], 2.0, noisy=True),  # never reaches 0.2
        result("half", None, [], 0.0, status="skipped", reason="needs a GPU"),
        result("boom", None, [], 0.0, status="failed", reason="non-finite loss: nan"),
    ]


def write_tb(run_dir: Path, res: Result, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
    """Event files as the worker leaves them: fit's (train + val curve), then validate's (one val point)."""
    version = res.trick if res.repeat == 0 else f"{res.trick}-r{res.repeat}"
    fit = TensorBoardLogger(save_dir=str(run_dir / "tb"), name=f"{res.workload}/{res.accelerator}", version=version)
    for step, value in train:
        fit.log_metrics({"train_loss": value}, step=step)
    for step, value in val:
        fit.log_metrics({"val_loss": value}, step=step)
    fit.finalize("success")
    validate = TensorBoardLogger(save_dir=str(run_dir / "tb"), name=f"{res.workload}/{res.accelerator}", version=version)
    validate.log_metrics({"val_loss": 123.0}, step=val[-1][0] + 1)  # would spoil the curve if read
    validate.finalize("success")


def make_run(run_dir: Path, results: list[Result], tb: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "env.json").write_text(json.dumps(ENV))
    (run_dir / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in results))
    if tb:
        for res in results:
            if res.status == "ok":
                losses = [p["val_loss"] for p in res.curve]
                write_tb(run_dir, res, [(7, losses[0] * 1.2), (23, losses[1] * 1.2)],
                         [(p["step"] - 1, p["val_loss"]) for p in res.curve])
    return run_dir


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The first group's Markdown tables (the main one and the two under it) as trick -> column -> cell,
    marks stripped."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] = []
    section = next(part for part in markdown.split("\n## ")[1:] if "\n| trick" in part)  # after the verdicts
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("|:"):
            continue
        cells = [c.strip().strip("*_") for c in line.strip("|").split("|")]
        if cells[0] == "trick":
            header = cells
        else:
            rows.setdefault(cells[0], {}).update(zip(header, cells))
    return rows


def test_rerendering_the_stored_results_jsonl_gives_the_same_table_and_files(tmp_path: Path) -> None:
    results = hand_made()
    run_dir = make_run(tmp_path / "run", results)
    write_report(run_dir, results, ENV)  # what `run` does at its end, from the objects in memory
    first = {name: (run_dir / name).read_bytes() for name in ("report.md", "report.html", "results.csv")}
    plots = {p.name: p.read_bytes() for p in (run_dir / "plots").glob("*.png")}

    assert cli_main(["report", str(run_dir)]) == 0  # from results.jsonl alone

    for name, content in first.items():
        assert (run_dir / name).read_bytes() == content, name
    assert {p.name: p.read_bytes() for p in (run_dir / "plots").glob("*.png")} == plots
    summary = summary_frame(read_results(run_dir / "results.jsonl"))
    markdown = (run_dir / "report.md").read_text()
    for part, marks in zip(split_columns(display_table(summary)), split_columns(cell_marks(summary))):
        assert markdown_table(part, marks) in markdown


def test_table_shows_ratios_status_and_time_to_target(tmp_path: Path) -> None:
    results = hand_made()
    run_dir = make_run(tmp_path / "run", results)
    write_report(run_dir, results, ENV)
    markdown = (run_dir / "report.md").read_text()
    rows = table_rows(markdown)
    fast, slow, base = (rows[name] for name in ("fast", "slow", "baseline"))
    assert fast["samples/s"].startswith("20,000 (2.00x)")
    assert base["to target s"] == "3.00" and base["to target samples"] == "3,000"  # the baseline reaches its own loss at the end
    assert fast["to target s"] == "1.00" and fast["to target samples"] == "2,000"
    assert slow["to target s"] == "not reached"
    assert rows["half"]["status"] == "skipped" and rows["boom"]["status"] == "failed"
    assert "Target val loss: 0.2 (the baseline's final val loss)." in markdown
    assert "- **boom** (ae, cpu, repeat 0): failed: non-finite loss: nan" in markdown
    for plot in ("ae-digits-cpu-throughput-memory.png", "ae-digits-cpu-loss-curves.png", "ae-digits-cpu-pareto.png"):
        assert (run_dir / "plots" / plot).is_file()
        assert f"](plots/{plot})" in markdown  # linked from report.md

    write_report(run_dir, results, ENV, target_val_loss=0.45)
    rows = table_rows((run_dir / "report.md").read_text())
    assert rows["slow"]["to target s"] == "6.00"  # 0.4 <= 0.45 at its third validation


def test_best_worst_and_noisy_cells_are_marked_in_both_pages(tmp_path: Path) -> None:
    results = hand_made()
    summary = summary_frame(results)
    marks = cell_marks(summary).set_axis(summary["trick"])
    assert marks.loc["fast", "samples/s"] == "best" and marks.loc["slow", "samples/s"] == "worst noisy"
    assert marks.loc["fast", "peak mem MiB"] == "worst" and marks.loc["baseline", "peak mem MiB"] == "best"
    assert marks.loc["slow", "peak mem MiB"] == "best"  # ties share the mark
    assert marks.loc["slow", "to target s"] == "worst"  # not reached is the worst there is
    assert marks.loc["half", "samples/s"] == ""  # no value, no mark

    close = [result("baseline", 10_000, [0.2], 1.0), result("same", 10_050, [0.2], 1.0)]
    assert (cell_marks(summary_frame(close))["samples/s"] == "").all()  # within 1%: nothing to choose

    run_dir = make_run(tmp_path / "run", results, tb=False)
    write_report(run_dir, results, ENV)
    html = (run_dir / "report.html").read_text()
    fast_cell = re.search(r'<td [^>]*class="([^"]*)"[^>]*>20,000 \(2\.00x\)', html)
    slow_cell = re.search(r'<td [^>]*class="([^"]*)"[^>]*>5,000 \(0\.50x\)', html)
    assert fast_cell and "best" in fast_cell.group(1).split()
    assert slow_cell and {"worst", "noisy"} <= set(slow_cell.group(1).split())
    assert re.search(r"\| \*\*20,000 \(2\.00x\) ±2%\*\* +\|", (run_dir / "report.md").read_text())


def test_html_is_one_self_contained_file_with_the_images_embedded(tmp_path: Path) -> None:
    results = hand_made()
    run_dir = make_run(tmp_path / "run", results)
    write_report(run_dir, results, ENV)
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # throughput/memory bars, loss curves, Pareto scatter
    assert all(base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing outside the file
    assert "<script" not in html
    assert "9.9.9-test" in html and "Test CPU" in html  # the environment
    assert "How this was measured" in html and "Time to target" in html  # the protocol and the definition


def test_loss_curves_come_from_the_fit_event_file_only(tmp_path: Path) -> None:
    results = hand_made()
    run_dir = make_run(tmp_path / "run", results)
    curves = fit_curves(tb_version_dir(run_dir, results[0]))
    assert list(curves["val_loss"]["value"].round(4)) == [0.5, 0.3, 0.2]  # not validate's 123.0
    assert list(curves["train_loss"]["step"]) == [7, 23]
    assert fit_curves(tmp_path / "missing") == {}


def test_a_partial_run_without_a_baseline_still_renders(tmp_path: Path) -> None:
    results = [result("fast", 20_000, [0.4, 0.2], 0.5)]
    run_dir = make_run(tmp_path / "run", results, tb=False)
    assert cli_main(["report", str(run_dir)]) == 0
    markdown = (run_dir / "report.md").read_text()
    assert "Target val loss: none" in markdown
    assert table_rows(markdown)["fast"]["samples/s"] == "20,000 ±2%"  # no baseline: no ratio
    assert (run_dir / "report.html").is_file()


def test_trick_details_are_listed_and_their_images_embedded(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    artifacts = run_dir / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "lr.json").write_text(json.dumps({"lr": [1e-5, 1e-4, 1e-3, 1e-2], "loss": [1.0, 0.8, 0.5, 2.0]}))
    png = base64.b64decode(  # a 1x1 PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    (artifacts / "own.png").write_bytes(png)
    results = [
        result("baseline", 10_000, [0.5, 0.3], 1.0),
        result("lr-find", 10_000, [0.4, 0.2], 1.0, found_lr=0.00123, lr_curve_json="artifacts/lr.json"),
        result("own-plot", 10_000, [0.4, 0.2], 1.0, found_batch_size=256, lr_curve_png="artifacts/own.png"),
    ]
    make_run(run_dir, results, tb=False)
    write_report(run_dir, results, ENV)
    html = (run_dir / "report.html").read_text()
    assert "found_batch_size" in html and "256" in html and "0.00123" in html
    assert (run_dir / "plots" / "ae-digits-cpu-lr-find-lr_curve.png").is_file()  # drawn from the JSON
    assert base64.b64encode(png).decode() in html  # the trick's own PNG, embedded
    report = build_report(run_dir, results, ENV, draw=False)
    details = {d.trick: d for d in report.details}
    assert details["own-plot"].items["found_batch_size"] == "256"
    assert details["baseline"].items["epochs run"] == "2"
    assert "dataset_reason" not in details["baseline"].items


def test_pareto_front_is_the_rows_nobody_beats_on_both() -> None:
    cost = pd.Series([1.0, 2.0, 3.0, 2.5, None])
    loss = pd.Series([0.5, 0.3, 0.1, 0.4, 0.0])
    assert list(pareto_mask(cost, loss)) == [True, True, True, False, False]


def test_report_of_a_missing_run_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "results.jsonl does not exist" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path), "--target-val-loss", "nan"]) == 2
    assert "--target-val-loss must be a finite number" in capsys.readouterr().err


def test_a_real_run_has_its_curves_read_back_from_the_workers_tensorboard_logs(make_spec, tmp_path: Path) -> None:
    from harness.worker import execute

    res = execute(make_spec(max_epochs=2))
    assert res.status == "ok", res.reason
    curves = fit_curves(tb_version_dir(tmp_path, res))
    assert len(curves["val_loss"]) == len(res.curve) == 2
    assert not curves["train_loss"].empty
    write_report(tmp_path, [res], ENV)
    assert (tmp_path / "plots" / "autoencoder-digits-cpu-loss-curves.png").is_file()


def test_a_figure_that_cannot_be_drawn_is_named_and_the_report_stands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are untrusted: a figure matplotlib cannot draw from them is said so, in both reports."""
    from harness.report import plots

    def refuse(*args: object, **kwargs: object) -> None:
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(plots, "pareto_figure", refuse)
    results = [
        Result(run_id="ae-cpu-baseline-r0", trick="baseline", workload="autoencoder", dataset="digits", accelerator="cpu",
               repeat=0, status="ok", samples_per_s=1000.0, wall_s=1.0, val_loss=0.5, peak_mem_bytes=10**8),
    ]
    write_report(tmp_path, results)
    markdown = (tmp_path / "report.md").read_text()
    assert "Wall time against final val loss: not drawn from these rows (OverflowError: Python int too large" in markdown
    assert "not drawn from these rows (OverflowError" in (tmp_path / "report.html").read_text()
    assert "throughput-memory.png" in markdown  # the other figures are still drawn
