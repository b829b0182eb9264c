"""The runner: one process per run, each result appended at once, failures as rows, the rest go on."""

from __future__ import annotations

from pathlib import Path

from harness.executors.runner import run_all, run_one
from harness.spec import read_results


def test_a_failing_run_becomes_a_row_and_the_rest_go_on(make_spec, tmp_path: Path) -> None:
    diverging = make_spec(["grad-clipping"], run_id="diverging", lr=1e30, max_epochs=1)
    healthy = make_spec(run_id="healthy", max_epochs=1)
    seen = []
    results = run_all([diverging, healthy], tmp_path, show_progress=False, on_result=seen.append)
    assert [r.status for r in results] == ["failed", "ok"]
    assert "non-finite loss" in results[0].reason
    stored = read_results(tmp_path / "results.jsonl")
    assert [r.run_id for r in stored] == ["diverging", "healthy"] == [r.run_id for r in seen]
    assert stored[1].samples_per_s == results[1].samples_per_s > 0
    assert (tmp_path / "logs" / "healthy.log").read_text()  # the child's output is kept


def test_a_worker_that_dies_or_hangs_is_reported_with_its_cause(make_spec, tmp_path: Path) -> None:
    crashed = run_one(make_spec(run_id="crash", dataset="no-such-dataset"), tmp_path, plain=True)
    assert crashed.status == "failed"
    assert "exited with code 1" in crashed.reason and "no-such-dataset" in crashed.reason
    hung = run_one(make_spec(run_id="hang"), tmp_path, timeout_s=0.5)
    assert hung.status == "failed" and hung.reason == "timed out after 0.5 s"


def test_results_jsonl_survives_a_truncated_last_line(tmp_path: Path, make_spec) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"run_id": "a", "trick": "baseline", "workload": "w", "dataset": "d", '
                    '"accelerator": "cpu", "repeat": 0, "status": "ok"}\n{"run_id": "b", "tri')
    assert [r.run_id for r in read_results(path)] == ["a"]
