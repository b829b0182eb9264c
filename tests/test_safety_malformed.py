"""A run folder whose plan.json, specs/*.json or env.json is truncated, from another tool or crafted is
one line on stderr and exit 2 naming the file and what is wrong (never a traceback), for every command
that reads it; committed example plans still load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.runfolder.rundir import PLAN, RESULTS, load_specs
from harness.spec import Result
from harness.testing import tiny_spec

REPO = Path(__file__).resolve().parent.parent


def good_spec(run_dir: Path) -> dict[str, Any]:
    return dataclasses.asdict(tiny_spec(run_dir))


def with_spec(run_dir: Path, **changes: Any) -> str:
    spec = {**good_spec(run_dir), **changes}
    return json.dumps({"command": "test", "specs": [spec]})


def without(run_dir: Path, key: str) -> str:
    spec = good_spec(run_dir)
    del spec[key]
    return json.dumps({"command": "test", "specs": [spec]})


def malformed_plans(run_dir: Path) -> dict[str, tuple[str | bytes, str]]:
    """name -> (plan.json content, a fragment the one-line error must hold)."""
    whole = json.dumps({"command": "test", "specs": [good_spec(run_dir)]}, indent=1)
    return {
        "truncated": (whole[: len(whole) // 2], "not JSON"),
        "empty": ("", "not JSON"),
        "binary": (b"\xff\xfe\x00\x81garbage", "not JSON"),
        "deep": ("[" * 100_000, "not JSON"),
        "list": ("[1, 2]", "JSON list"),
        "no specs": ('{"command": "x"}', "no 'specs'"),
        "specs object": ('{"specs": {"a": 1}}', "not a list"),
        "spec not object": ('{"specs": [1]}', "spec 0"),
        "spec empty": ('{"specs": [{}]}', "lacks"),
        "lacks batch_size": (without(run_dir, "batch_size"), "'batch_size'"),
        "batch_size str": (with_spec(run_dir, batch_size="64"), "'batch_size'"),
        "batch_size bool": (with_spec(run_dir, batch_size=True), "'batch_size'"),
        "tricks str": (with_spec(run_dir, tricks="grad-clipping"), "'tricks'"),
        "trick_params values": (with_spec(run_dir, trick_params={"swa": 1}), "'trick_params'"),
        "run_id null": (with_spec(run_dir, run_id=None), "'run_id'"),
        "lr str": (with_spec(run_dir, lr="fast"), "'lr'"),
        "target str": (json.dumps({"specs": [good_spec(run_dir)], "target_val_loss": "low"}), "'target_val_loss'"),
        "jsonl of another tool": ('{"event": "start"}\n{"event": "end"}\n', "not JSON"),
    }


CASES = list(malformed_plans(Path("/x")))


def run_folder(tmp_path: Path, plan: str | bytes) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / PLAN).write_bytes(plan if isinstance(plan, bytes) else plan.encode())
    row = Result(run_id="autoencoder-cpu-baseline-r0", trick="baseline", workload="autoencoder", dataset="digits",
                 accelerator="cpu", repeat=0, status="ok", checkpoints={"best": "checkpoints/x/best.ckpt"})
    (run_dir / RESULTS).write_text(row.to_json() + "\n")
    return run_dir


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["resume", "predict", "export"])
def test_a_malformed_plan_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, command: str) -> None:
    content, fragment = malformed_plans(tmp_path / "run")[case]
    run_dir = run_folder(tmp_path, content)
    argv = {"resume": ["resume", str(run_dir), "--quiet"], "predict": ["predict", str(run_dir), "--trick", "baseline"],
            "export": ["export", str(run_dir), "--trick", "baseline", "--format", "onnx"]}[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in captured.err + captured.out
    assert "cannot be read" in err and fragment in err, err
    assert PLAN in err, err


def test_a_malformed_spec_file_without_a_plan_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = run_folder(tmp_path, "")
    (run_dir / PLAN).unlink()
    (run_dir / "specs").mkdir()
    (run_dir / "specs" / "autoencoder-cpu-baseline-r0.json").write_text('{"run_id": "autoencoder-cpu-baseline-r0"')
    assert main(["predict", str(run_dir), "--trick", "baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "specs/autoencoder-cpu-baseline-r0.json" in err and "not JSON" in err, err


@pytest.mark.parametrize("env", ["{trunc", "[1]", '{"versions": "x", "gpus": [1, {"x": 2}]}', "\xff"])
def test_a_malformed_env_json_does_not_stop_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], env: str) -> None:
    run_dir = run_folder(tmp_path, with_spec(tmp_path / "run"))
    (run_dir / "env.json").write_text(env)
    assert main(["report", str(run_dir)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (run_dir / "report.html").is_file()


def test_the_committed_example_plans_still_load() -> None:
    plans = sorted((REPO / "reports").rglob(PLAN))
    assert plans
    for plan in plans:
        assert load_specs(plan.parent)
