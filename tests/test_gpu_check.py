"""The GPU check (benchmarks/gpu_check.py) cannot fail on a GPU for a typo: its CPU smoke runs the same
sequence here, its GPU arguments are parsed and checked here, and its checks catch what they claim to."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.cli import build_parser
from harness.runfolder.plan import check_trick_runs, parse_params, parse_tricks

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


@pytest.mark.parametrize("step", gpu_check.STEPS, ids=lambda step: step.name)
@pytest.mark.parametrize("mode", ["gpu", "smoke"])
def test_every_step_parses_as_the_harness_would_parse_it(step: object, mode: str) -> None:
    """The GPU arguments never run here, so a typo in them is caught by parsing them as the CLI does."""
    argv = [step.command, *getattr(step, mode), "--out", "unused"]
    args = build_parser().parse_args(argv)
    params = parse_params(args.param)
    check_trick_runs(parse_tricks(args.tricks), params.tricks)  # names, parameters and combinations


def _write_rows(folder: Path, rows: list[dict[str, object]]) -> None:
    run = folder / "run-1"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = dict(
        run_id="x", trick="baseline", accelerator="gpu", status="ok", reason="", mem_kind="cuda_max_allocated",
        peak_mem_bytes=1, loader="device", details={}, mfu=0.1, device_name="NVIDIA H200",
    )
    row.update(fields)
    return row


def test_checks_catch_what_they_claim(tmp_path: Path) -> None:
    _write_rows(tmp_path / "a", [_row(loader="dataloader"), _row(run_id="y", status="failed", reason="boom")])
    problems = gpu_check.check_rows_ran(tmp_path / "a", True)
    assert any("not device-resident" in p for p in problems) and any("y failed: boom" in p for p in problems)

    _write_rows(tmp_path / "b", [_row(trick="16-mixed", details={})])
    assert gpu_check.check_16_mixed_scaler(tmp_path / "b", True), "16-mixed without a GradScaler must be a problem"

    _write_rows(tmp_path / "c", [_row(status="ok"), _row(trick="grad-accumulation")])
    assert any("did not fail as out of memory" in p for p in gpu_check.check_out_of_memory(tmp_path / "c", True))
    assert gpu_check.check_out_of_memory(tmp_path / "c", False) == []  # a CPU cannot run out of GPU memory

    _write_rows(tmp_path / "d", [_row(status="failed", reason="out of memory: CUDA out of memory."), _row(trick="grad-accumulation")])
    assert gpu_check.check_out_of_memory(tmp_path / "d", True) == []

    _write_rows(tmp_path / "e", [_row(isolation="fork"), _row(run_id="z", isolation="spawn", details={"isolation_note": "fork server: CUDA"})])
    assert gpu_check.check_forked(tmp_path / "e", True) == ["z: isolation 'spawn' fork server: CUDA"]

    _write_rows(tmp_path / "f", [
        _row(run_id="t", trick="tf32", status="skipped", reason="tf32 needs compute capability 8.0+"),
        _row(run_id="f1", trick="fp8", status="skipped", reason="needs torchao: pip install -e '.[fp8]'"),
        _row(run_id="f2", trick="fp8+bf16-mixed", status="skipped", reason="no eligible Linear"),
        _row(run_id="c", trick="bf16-mixed+compile", status="ok", details={}),
    ])
    problems = gpu_check.check_new_tricks_ran(tmp_path / "f", True)
    assert [p.split(" ")[0].rstrip(":") for p in problems] == ["t", "f2", "c"], problems
    assert gpu_check.check_new_tricks_ran(tmp_path / "f", False) == []  # on a CPU they are skipped with reasons


def test_the_cpu_smoke_runs_the_whole_sequence(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    summary = json.loads((tmp_path / "gpu-check.json").read_text())
    problems = {step["name"]: step["problems"] or step["skipped"] for step in summary["steps"] if step["problems"] or step["skipped"]}
    assert completed.returncode == 0 and not problems, f"{problems}\n{completed.stderr[-2000:]}"
    assert [step["name"] for step in summary["steps"]] == [step.name for step in gpu_check.STEPS]
    assert "| parity |" in (tmp_path / "gpu-check.md").read_text()


def test_without_a_gpu_the_gpu_mode_stops_at_once(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 2 and "no CUDA device visible" in completed.stderr
