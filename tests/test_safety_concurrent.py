"""One writer per run folder: while a `run` or `resume` holds a folder, a second `resume` of it is
refused at once (one line, exit 2) instead of running the same runs again and duplicating rows."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.commands.options import new_run_dir
from harness.errors import UserError
from harness.runfolder.rundir import LOCK, RESULTS, write_plan, writer_lock
from harness.testing import tiny_spec

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(120)
"""


def pending_run(tmp_path: Path) -> Path:
    """A run folder whose plan holds one run without a row: a resume would run it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_plan(run_dir, [tiny_spec(run_dir)], "test")
    (run_dir / RESULTS).write_text("")
    return run_dir


def test_a_second_writer_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = pending_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        assert main(["resume", str(run_dir), "--quiet"]) == 2
        assert time.monotonic() - start < 10
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another process" in err and f"pid {holder.pid}" in err, err
        assert (run_dir / RESULTS).read_text() == ""  # nothing ran
        assert not (run_dir / "logs").exists()
    finally:
        holder.kill()
        holder.wait()
    with writer_lock(run_dir):  # the kernel released the dead holder's lock: no stale lock
        with pytest.raises(UserError, match="another process"), writer_lock(run_dir):
            pass


def test_a_lock_file_symlinked_out_of_the_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = pending_run(tmp_path)
    target = tmp_path / "elsewhere"
    (run_dir / LOCK).symlink_to(target)
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot lock the run folder" in err, err
    assert not target.exists()


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    folders = {new_run_dir(tmp_path) for _ in range(3)}
    assert len(folders) == 3
