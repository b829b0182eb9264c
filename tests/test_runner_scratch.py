"""Each run's scratch folder: made by the harness, seen by the worker, gone after the run however it
ended (killed, timed out, or fine); and the sweep that removes what a killed harness left behind.

The runs' temp dir is a folder of the test's own (TMPDIR, which the workers inherit), so the tests can
say what is left in it. A probe module (tests/probes/probe_models.py), imported as a user's own model,
reports the scratch folder it was given and writes into it, then can SIGKILL its own process or sleep
past a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.executors.runner import launchers, run_all
from harness.executors.scratch import OLD_INDUCTOR_AGE_S, run_scratch, sweep_stale_scratch

@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir of this process and of the runs it starts (TMPDIR), empty at the start."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(folder)
    return folder


def scratch_spec(probe_spec, tmp_path: Path, run_id: str, **init_args):
    """A probe run that reports its scratch folder in ``tmp_path/<run_id>.report.json`` (see ``report``)."""
    return probe_spec(run_id, scratch_report=str(tmp_path / f"{run_id}.report.json"), **init_args)


def report(tmp_path: Path, run_id: str) -> dict:
    return json.loads((tmp_path / f"{run_id}.report.json").read_text())


@pytest.mark.parametrize("isolation", ["fork", "spawn"])
def test_a_killed_run_and_a_finished_one_leave_no_scratch_folder(isolation: str, probe_spec, temp_dir: Path, tmp_path: Path) -> None:
    specs = [scratch_spec(probe_spec, tmp_path, "killed", kill=True), scratch_spec(probe_spec, tmp_path, "fine")]
    killed, fine = run_all(specs, tmp_path / "run", show_progress=False, isolation=isolation)
    assert killed.status == "failed" and killed.reason.startswith("killed by SIGKILL"), killed.reason
    assert fine.status == "ok", fine.reason
    seen = {run_id: report(tmp_path, run_id) for run_id in ("killed", "fine")}
    for run_id, what in seen.items():
        assert what["existed"], f"{run_id}: the worker got no scratch folder ({what['scratch']!r})"
        assert Path(what["scratch"]).parent == temp_dir and Path(what["scratch"]).name.startswith(f"harness-scratch-{os.getpid()}-{run_id}-")
        assert not os.path.exists(what["scratch"])
    assert seen["killed"]["scratch"] != seen["fine"]["scratch"]
    if isolation == "fork":  # a run's own folder in its environment does not make the harness restart the server
        assert seen["killed"]["ppid"] == seen["fine"]["ppid"]
    assert sorted(os.listdir(temp_dir)) == []


def test_a_run_killed_at_its_timeout_leaves_no_scratch_folder(probe_spec, temp_dir: Path, tmp_path: Path) -> None:
    (hung,) = run_all([scratch_spec(probe_spec, tmp_path, "hung", sleep=600)], tmp_path / "run", timeout_s=3.0, show_progress=False, isolation="fork")
    assert hung.status == "failed" and hung.reason == "timed out after 3 s", hung.reason
    assert report(tmp_path, "hung")["existed"]
    assert os.listdir(temp_dir) == []


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_sweep_removes_only_our_folders_whose_owner_is_gone(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    folder.mkdir()
    dead, live = dead_pid(), os.getpid()

    def scratch(name: str) -> Path:
        (folder / name).mkdir()
        (folder / name / "inductor").mkdir()
        (folder / name / "inductor" / "kernel.so").write_bytes(b"x" * 100)
        return folder / name

    stale = scratch(f"harness-scratch-{dead}-autoencoder-cpu-compile-r0-ab_c12xy")
    running = scratch(f"harness-scratch-{live}-autoencoder-cpu-compile-r1-ab_c12xy")
    not_ours = scratch(f"harness-scratch-{dead}-no-random-tail")  # not a name mkdtemp gave
    old_style, new_old_style = scratch("harness-inductor-r0-abcd1234"), scratch("harness-inductor-r1-abcd1234")
    two_days_ago = time.time() - 2 * OLD_INDUCTOR_AGE_S
    os.utime(old_style, (two_days_ago, two_days_ago))
    target = scratch("somebody-elses-folder")
    link = folder / f"harness-scratch-{dead}-link-abcd1234"
    link.symlink_to(target, target_is_directory=True)
    a_file = folder / f"harness-scratch-{dead}-file-abcd1234"
    a_file.write_text("not a folder")

    removed = sweep_stale_scratch(str(folder))

    assert sorted(removed) == sorted([str(stale), str(old_style)])
    assert not stale.exists() and not old_style.exists()
    assert running.exists() and not_ours.exists() and new_old_style.exists() and a_file.exists()
    assert link.is_symlink() and (target / "inductor" / "kernel.so").exists()  # neither the link nor what it points to


def test_starting_the_launchers_sweeps_the_temp_dir(temp_dir: Path, tmp_path: Path) -> None:
    stale = temp_dir / f"harness-scratch-{dead_pid()}-r0-abcd1234"
    stale.mkdir()
    with launchers("spawn", tmp_path / "run"):
        assert not stale.exists()



def test_the_folder_goes_when_the_run_raises_and_a_full_temp_dir_means_none(temp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyboardInterrupt), run_scratch("r0") as path:  # Ctrl-C while the worker runs
        Path(path, "file").write_text("x")
        raise KeyboardInterrupt
    assert os.listdir(temp_dir) == []

    def full(**kwargs: object) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with run_scratch("r1") as path:
        assert path == ""
