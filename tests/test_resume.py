"""``harness resume``: a run interrupted with Ctrl-C is finished from its last.ckpt, not started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.commands.resume_cmd import to_resume
from harness.runfolder.rundir import load_specs, write_plan
from harness.spec import Result
from harness.testing import tiny_spec

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 60
BATCHES_PER_EPOCH = 18  # digits: 1150 training samples in batches of 64


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_ctrl_c_then_resume_continues_from_last_ckpt(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "harness", "run", "--tricks", "grad-clipping", "--accelerator", "cpu",
        "--dataset", "digits", "--max-epochs", str(EPOCHS), "--repeats", "1", "--quiet", "--out", str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A session of its own, with SIGINT at its default (a background job would inherit it ignored).
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = list(tmp_path.glob("run-*/checkpoints/autoencoder-cpu-grad-clipping-r0/last.ckpt"))
        if found:
            last = found[0]
            break
        time.sleep(0.05)
    assert last is not None, "the trick run never saved last.ckpt"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 130, output
    run_dir = last.parents[2]
    before = rows(run_dir)
    assert [r["trick"] for r in before] == ["baseline"]  # the interrupted run left no row

    assert main(["resume", str(run_dir), "--quiet"]) == 0
    after = rows(run_dir)
    assert after[0] == before[0]  # the finished run is kept as it was, not run again
    resumed = after[1]
    assert resumed["trick"] == "grad-clipping" and resumed["status"] == "ok"
    assert resumed["details"]["resumed_from"] == "checkpoints/autoencoder-cpu-grad-clipping-r0/last.ckpt"
    assert resumed["epochs"] == EPOCHS and resumed["optimizer_steps"] == EPOCHS * BATCHES_PER_EPOCH
    # It trained only the epochs left: the epochs before the interruption came from the checkpoint.
    assert 0 < resumed["steps"] < EPOCHS * BATCHES_PER_EPOCH
    assert resumed["steps"] % BATCHES_PER_EPOCH == 0
    report = (run_dir / "report.md").read_text()
    assert "resumed from checkpoints/autoencoder-cpu-grad-clipping-r0/last.ckpt: times, samples and curve count from there" in report

    assert main(["resume", str(run_dir), "--quiet"]) == 0  # nothing left: the report is rebuilt, no row added
    assert rows(run_dir) == after


def test_to_resume_picks_missing_runs_and_their_last_ckpt(tmp_path: Path) -> None:
    specs = [tiny_spec(tmp_path, tricks) for tricks in ([], ["grad-clipping"], ["swa"])]
    write_plan(tmp_path, specs, "test")
    last = tmp_path / "checkpoints" / specs[1].run_id / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    done = Result(run_id=specs[0].run_id, trick="baseline", workload="autoencoder", dataset="digits", accelerator="cpu", repeat=0, status="ok")
    failed = Result(run_id=specs[2].run_id, trick="swa", workload="autoencoder", dataset="digits", accelerator="cpu", repeat=0, status="failed")
    loaded = load_specs(tmp_path)
    pending = to_resume(loaded, [done, failed], retry_failed=False)
    assert [(s.label, s.resume_from) for s in pending] == [("grad-clipping", f"checkpoints/{specs[1].run_id}/last.ckpt")]
    pending = to_resume(loaded, [done, failed], retry_failed=True)
    assert [(s.label, s.resume_from) for s in pending] == [("grad-clipping", f"checkpoints/{specs[1].run_id}/last.ckpt"), ("swa", "")]


def test_resume_of_a_folder_without_a_plan_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.jsonl").write_text("")
    assert main(["resume", str(tmp_path)]) == 2
    assert "has no plan.json" in capsys.readouterr().err
