"""Hypothesis against the readers of a run folder: arbitrary bytes or JSON in results.jsonl, plan.json
and env.json give skipped rows (named) or one UserError, never a traceback.

A report folder is shared and may be crafted or truncated; these readers are the only way its files
get in. Examples are kept few (the report renders plots) and unbounded in time (deadline=None: a
loaded CI machine is slow, not wrong).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.errors import UserError
from harness.runfolder.rundir import PLAN, RESULTS, load_specs, read_plan
from harness.spec import Result, parse_results
from harness.testing import tiny_spec

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# a failing report example is printed as found: shrinking one (a report each try) took minutes
SLOW = settings(
    max_examples=20, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
GOOD_ROW: dict[str, Any] = json.loads(Result(
    run_id="ae-cpu-baseline-r0", trick="baseline", workload="autoencoder", dataset="digits", accelerator="cpu", repeat=0,
    status="ok", samples_per_s=100.0, val_loss=0.5, wall_s=1.0, peak_mem_bytes=1000, batch_size=64, seed=0,
).to_json())
GOOD_SPEC: dict[str, Any] = dataclasses.asdict(tiny_spec(Path("/nowhere")))


def mutated(good: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A good row or spec with some fields set to arbitrary JSON, some dropped, some added."""
    return st.tuples(
        st.dictionaries(st.sampled_from(sorted(good)), JSON, max_size=3),
        st.sets(st.sampled_from(sorted(good)), max_size=2),
        st.dictionaries(st.text(max_size=8), JSON, max_size=2),
    ).map(lambda change: {**{k: v for k, v in good.items() if k not in change[1]}, **change[2], **change[0]})


ROW_FLOATS = ["samples_per_s", "samples_per_s_iqr", "step_time_ms", "train_loss", "val_loss", "test_loss", "wall_s", "fit_s",
              "tune_s", "compile_s", "flops_per_s", "mfu"]
ROW_INTS = ["batch_size", "peak_mem_bytes", "steps", "epochs", "repeat", "seed", "world_size"]
ROW_TEXTS = ["trick", "status", "reason", "workload", "dataset", "accelerator", "mem_kind", "precision"]
# rows the reader accepts (each field of its type) with values a report must still cope with
ODD_ROW = st.fixed_dictionaries({}, optional={
    **{key: st.none() | st.floats(allow_nan=True, allow_infinity=True) for key in ROW_FLOATS},
    **{key: st.integers(min_value=-(2**70), max_value=2**70) for key in ROW_INTS},
    **{key: st.sampled_from(["ok", "failed", "skipped", "", "a|b\n`c`"]) | st.text(max_size=12) for key in ROW_TEXTS},
    "block_samples_per_s": st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    "noisy": st.none() | st.booleans(),
    "details": st.dictionaries(st.sampled_from(["note", "measure_warning", "found_lr", "lr_curve_png", "test_weights", "x"]), JSON, max_size=3),
    "curve": st.lists(st.dictionaries(st.sampled_from(["epoch", "step", "samples", "val_loss", "fit_s"]), JSON, max_size=4), max_size=3),
}).map(lambda change: {**GOOD_ROW, **change})


@FAST
@given(st.binary(max_size=400))
def test_any_bytes_as_results_jsonl_are_rows_or_named_bad_lines(data: bytes) -> None:
    text = data.decode(errors="replace")
    results, bad = parse_results(text)
    assert len(results) + len(bad) == sum(1 for line in text.splitlines() if line.strip())
    assert all(isinstance(number, int) and why for number, why in bad)


@FAST
@given(st.lists(JSON | mutated(GOOD_ROW), max_size=4))
def test_any_json_lines_as_results_jsonl_are_rows_or_named_bad_lines(rows: list[Any]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    results, bad = parse_results(text)
    assert len(results) + len(bad) == len(rows)


def run_folder(root: Path, results: str | bytes | None = None, plan: str | bytes | None = None, env: str | bytes | None = None) -> Path:
    run_dir = root / "run"
    run_dir.mkdir()
    for name, content in ((RESULTS, results), (PLAN, plan), ("env.json", env)):
        if content is not None:
            path = run_dir / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return run_dir


def one_line_or_report(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The command ends with exit 0, 1 or 2 and no traceback; an exit 2 says why in one line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("harness: error:")]) == 1, err


def test_rows_whose_values_no_figure_can_place_leave_the_report_standing(capsys: pytest.CaptureFixture[str]) -> None:
    """What Hypothesis found in CI: a throughput of 1e-225 beside one of 5e4, blocks of -3.4e38 and a peak
    memory of -8e17 made matplotlib raise while placing a label; the figure now says it was not drawn."""
    odd = {**GOOD_ROW, "run_id": "odd-r0", "trick": "ok", "samples_per_s": 1.2491451142126764e-225,
           "step_time_ms": 3.142151282715726e-277, "peak_mem_bytes": -825454450816770560, "mfu": -2.3648156867220504e16,
           "block_samples_per_s": [-2.359679701357086e16, -3.402823466e38, -8.584758566772358e-299, -2.028658086656327e-242],
           "world_size": -5643711, "epochs": -1981694, "steps": -2924, "batch_size": 24277, "curve": [{}], "details": {}}
    with tempfile.TemporaryDirectory() as root:
        run_dir = run_folder(Path(root), results="".join(json.dumps(row) + "\n" for row in [GOOD_ROW, odd]))
        one_line_or_report(["report", str(run_dir)], capsys)
        assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()


@SLOW
@given(rows=st.lists(mutated(GOOD_ROW) | ODD_ROW, min_size=1, max_size=3))
def test_report_renders_any_rows_it_accepts(rows: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        run_dir = run_folder(Path(root), results="".join(json.dumps(row) + "\n" for row in [GOOD_ROW, *rows]))
        one_line_or_report(["report", str(run_dir)], capsys)


@SLOW
@given(env=st.binary(max_size=200) | JSON.map(lambda value: json.dumps(value).encode()))
def test_any_env_json_leaves_the_report_standing(env: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        run_dir = run_folder(Path(root), results=json.dumps(GOOD_ROW) + "\n", env=env)
        one_line_or_report(["report", str(run_dir)], capsys)


@FAST
@given(st.binary(max_size=300) | JSON.map(lambda value: json.dumps(value).encode())
       | st.lists(JSON | mutated(GOOD_SPEC), max_size=3).map(lambda specs: json.dumps({"command": "x", "specs": specs}).encode()))
def test_any_plan_json_is_specs_or_one_user_error(plan: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        run_dir = run_folder(Path(root), plan=plan)
        try:
            read_plan(run_dir)
            specs = load_specs(run_dir)
        except UserError as error:
            assert str(error) and "\n" not in str(error)
        else:
            assert all(spec.run_dir == str(run_dir.resolve()) for spec in specs)


@SLOW
@given(specs=st.lists(mutated(GOOD_SPEC), min_size=1, max_size=2))
def test_resume_of_any_plan_is_one_line_or_runs(specs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    """resume reads plan.json and results.jsonl; a row for every spec means nothing runs (fast), only the report."""
    rows = [{**GOOD_ROW, "run_id": spec.get("run_id")} for spec in specs]
    with tempfile.TemporaryDirectory() as root:
        run_dir = run_folder(Path(root), plan=json.dumps({"command": "x", "specs": specs}),
                             results="".join(json.dumps(row, default=str) + "\n" for row in rows))
        one_line_or_report(["resume", str(run_dir)], capsys)
