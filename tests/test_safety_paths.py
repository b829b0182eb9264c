"""Names and paths read from a run folder's files stay inside it: a crafted plan.json or results.jsonl
with ``../..`` or absolute values is refused (exit 2) and nothing is written outside the folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.runfolder.rundir import RESULTS, inside_run_dir, plain_name, write_plan
from harness.spec import Result
from harness.testing import tiny_spec


def files_outside(tmp_path: Path, run_dir: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if run_dir not in p.parents and p != run_dir}


def crafted_run(tmp_path: Path, run_id: str, checkpoint: str = "checkpoints/x/best.ckpt") -> Path:
    """A run folder, deep under tmp_path, whose plan and row carry ``run_id`` and ``checkpoint``."""
    run_dir = tmp_path / "a" / "b" / "run"
    run_dir.mkdir(parents=True)
    spec = dataclasses.replace(tiny_spec(run_dir), run_id=run_id)
    write_plan(run_dir, [spec], "test")
    row = Result(run_id=run_id, trick="baseline", workload="autoencoder", dataset="digits", accelerator="cpu",
                 repeat=0, status="ok", checkpoints={"best": checkpoint})
    (run_dir / RESULTS).write_text(row.to_json() + "\n")
    return run_dir


def hostile_ids(tmp_path: Path) -> list[str]:
    return ["../../x", "../../../escaped", str(tmp_path / "abs"), "..", "a/b"]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("command", ["resume", "predict"])
def test_a_traversal_run_id_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], index: int, command: str) -> None:
    run_id = hostile_ids(tmp_path)[index]
    run_dir = crafted_run(tmp_path, run_id)
    # resume: a plan whose run has no row, so that resume would run it
    if command == "resume":
        (run_dir / RESULTS).write_text("")
    before = files_outside(tmp_path, run_dir)
    argv = ["resume", str(run_dir), "--quiet"] if command == "resume" else ["predict", str(run_dir), "--trick", "baseline"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(run_id) in err, err
    assert files_outside(tmp_path, run_dir) == before


@pytest.mark.parametrize("checkpoint", ["../../outside.ckpt", "ABSOLUTE", "checkpoints/../../../outside.ckpt"])
def test_a_checkpoint_path_outside_the_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: str) -> None:
    outside = tmp_path / "a" / "outside.ckpt"
    checkpoint = str(outside) if checkpoint == "ABSOLUTE" else checkpoint
    run_dir = crafted_run(tmp_path, "autoencoder-cpu-baseline-r0", checkpoint)
    outside.write_bytes(b"not read")
    before = files_outside(tmp_path, run_dir)
    assert main(["predict", str(run_dir), "--trick", "baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "outside the run folder" in err and checkpoint in err, err
    assert files_outside(tmp_path, run_dir) == before


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "link").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside the run folder"):
        inside_run_dir(run_dir, "link/x.ckpt")
    assert inside_run_dir(run_dir, "checkpoints/r/best.ckpt") == run_dir.resolve() / "checkpoints/r/best.ckpt"


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "a\\b", "/abs", "x\x00y", None, 3])
def test_plain_name_refuses_what_is_not_a_file_name(value: object) -> None:
    with pytest.raises(UserError, match="not a plain name"):
        plain_name(value, "run id")


def test_plain_name_keeps_the_harness_own_names() -> None:
    for name in ("autoencoder-cpu-bf16-mixed+grad-clipping-r1", "mypkg.models.MyModule-gpu-baseline-r0"):
        assert plain_name(name, "run id") == name


def test_a_traversal_label_is_refused_by_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_plan(run_dir, [dataclasses.replace(tiny_spec(run_dir), label="../../../tb-escape")], "test")
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    assert "'../../../tb-escape'" in capsys.readouterr().err
    assert json.loads((run_dir / "plan.json").read_text())["specs"][0]["label"] == "../../../tb-escape"
