"""A checkpoint is untrusted input: predict and export load it weights-only, and a pickle payload in it
runs nothing unless the user passes --trust-checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.runfolder.rundir import RESULTS, write_plan
from harness.testing import tiny_spec
from harness.worker import execute

BEST = Path("checkpoints/autoencoder-cpu-baseline-r0/best.ckpt")


class Payload:
    """What an attacker puts in a .ckpt: unpickling it calls os.makedirs(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, int, bool]]:
        return os.makedirs, (str(self.marker), 0o777, True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: one baseline run of one epoch, with its best.ckpt and last.ckpt."""
    folder = tmp_path_factory.mktemp("trained")
    spec = tiny_spec(folder, max_epochs=1)
    write_plan(folder, [spec], "test")
    result = execute(spec)
    assert result.status == "ok", result.reason
    (folder / RESULTS).write_text(result.to_json() + "\n")
    return folder


def hostile_copy(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run folder whose best.ckpt is the real one plus a payload; and the payload's marker."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    marker = tmp_path / "pwned"
    checkpoint = torch.load(run_dir / BEST, weights_only=True)
    checkpoint["payload"] = Payload(marker)
    torch.save(checkpoint, run_dir / BEST)
    return run_dir, marker


@pytest.mark.parametrize("command", [["predict"], ["export", "--format", "torchscript"]])
def test_a_pickle_payload_is_refused_and_runs_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    run_dir, marker = hostile_copy(trained, tmp_path)
    assert main([command[0], str(run_dir), "--trick", "baseline", *command[1:]]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(run_dir / BEST) in err and "os.makedirs" in err and "--trust-checkpoint" in err


def test_trust_checkpoint_loads_it(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, marker = hostile_copy(trained, tmp_path)
    assert main(["predict", str(run_dir), "--trick", "baseline", "--trust-checkpoint"]) == 0
    assert marker.exists()  # the user vouched for the file: it was fully unpickled
    assert (run_dir / "predictions" / "autoencoder-cpu-baseline-r0-best.pt").is_file()


def test_a_file_that_is_no_checkpoint_is_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / BEST).write_bytes(b"not a checkpoint")
    assert main(["predict", str(run_dir), "--trick", "baseline"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run_dir / BEST) in err


def test_the_harness_own_checkpoints_need_no_trust(trained: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    assert main(["predict", str(run_dir), "--trick", "baseline"]) == 0
    assert main(["export", str(run_dir), "--trick", "baseline", "--format", "torchscript", "--checkpoint", "last"]) == 0
