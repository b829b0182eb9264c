"""The command line as a user meets it: exit codes, one-line errors, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.trick import TRICKS

ROOT = Path(__file__).resolve().parent.parent


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--tricks", "grad-clip"], "unknown trick 'grad-clip'; did you mean grad-clipping"),
        (["run", "--workload", "autoencodr"], "unknown workload 'autoencodr'; did you mean autoencoder"),
        (["run", "--param", "grad-clipping.value=abc"], "value='abc' is not a valid float"),
        (["run", "--accelerator", "tpu"], "unknown accelerator 'tpu'; valid choices: cpu, gpu, auto"),
        (["run", "--max-steps", "0"], "--max-steps must be -1"),
        (["run", "--tricks", "16-mixed+bf16-mixed"], "cannot run '16-mixed+bf16-mixed': 16-mixed and bf16-mixed both set"),
        (["run", "--param", "transformer.heads=0"], "transformer"),
        (["report", "/nonexistent/run"], "results.jsonl does not exist"),
        (["run", "--devices", "2", "--strategy", "ddp_spawn"], "runs fit in spawned or forked processes"),
        (["run", "--strategy", "dpp"], "unknown --strategy 'dpp'; did you mean ddp"),
        (["resume", "/nonexistent/run"], "run folder '/nonexistent/run' does not exist"),
        (["predict", "/nonexistent/run", "--trick", "swa"], "run folder '/nonexistent/run' does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([*argv, *(["--out", str(tmp_path), "--dataset", "digits"] if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("harness: error: ") and expected in err[-1]
    assert not list(tmp_path.iterdir())  # nothing was run or written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
def test_gpu_asked_for_but_absent_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--accelerator", "gpu", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "no CUDA device is visible" in message and "--accelerator cpu" in message


def test_more_gpus_than_the_machine_shows_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["run", "--accelerator", "gpu", "--devices", "2", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--devices 2 with --accelerator gpu: this machine shows 1 CUDA device(s)" in message
    assert not list(tmp_path.iterdir())


def test_list_shows_every_trick_with_its_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in TRICKS.names():
        assert name in out
    assert "[value=1.0, algorithm=norm]" in out and "autoencoder" in out


def test_tiny_end_to_end_run_of_all_tricks(tmp_path: Path) -> None:
    proc = harness("run", "--tricks", "all", "--accelerator", "cpu", "--dataset", "digits", "--max-epochs", "1", "--repeats", "1",
                   "--block-steps", "4", "--out", str(tmp_path / "reports"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "reports").iterdir()
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(r["trick"] for r in rows) == sorted(["baseline", *TRICKS.names()])
    plan = json.loads((run_dir / "plan.json").read_text())  # the runs ran shuffled, in plan.json's order
    assert [r["run_id"] for r in rows] == [spec["run_id"] for spec in plan["specs"]] and plan["order_seed"] == 42
    assert all(r["status"] in ("ok", "skipped") for r in rows)
    assert all(r["samples_per_s"] > 0 for r in rows if r["status"] == "ok")
    report = (run_dir / "report.md").read_text()
    for name in ["baseline", *TRICKS.names()]:
        assert f"| {name} " in report
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["lightning"] and "--tricks all" in env["command"]
    assert (run_dir / "results.csv").read_text().count("\n") == len(rows) + 1
    assert "baseline" in proc.stdout and str(run_dir) in proc.stdout

    first = report
    rerender = harness("report", str(run_dir), cwd=tmp_path)
    assert rerender.returncode == 0, rerender.stderr[-2000:]
    assert (run_dir / "report.md").read_text() == first


def test_a_failed_run_makes_the_exit_code_1(tmp_path: Path) -> None:
    proc = harness("run", "--tricks", "none", "--accelerator", "cpu", "--dataset", "digits", "--max-epochs", "1", "--repeats", "1",
                   "--lr", "1e30", "--out", str(tmp_path), "--quiet", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 of 1 runs failed" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--batch-size", "0"], "harness: error: run: argument --batch-size: 0 must be >= 1 (see --help)"),
        (["runn"], "harness: error: argument COMMAND: invalid choice: 'runn'"),
        (["parity", "--repeats", "x"], "harness: error: parity: argument --repeats: invalid int value: 'x'"),
    ],
)
def test_a_bad_flag_is_one_line_not_the_usage(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "usage:" not in err
