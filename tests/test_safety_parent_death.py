"""The workers die with the harness: SIGTERM of the parent ends the command like Ctrl-C ("interrupted",
exit 130, finished rows kept, no worker left), and after a SIGKILL of the parent, which it cannot
handle, the worker is killed by the kernel (PR_SET_PDEATHSIG) instead of running on as an orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")


def workers_of(folder: Path) -> list[int]:
    """Pids of live harness processes (a worker, forked or spawned, or the fork server) working for ``folder``.

    A spawned worker names the folder on its command line; a forked child has the fork server's command
    line, so a process counts when its command line or one of its open files (the run's log) is under it.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (entry / "status").read_text().splitlines() if line.startswith("State:")), "")
            if not any(name in cmdline for name in ("harness.worker", "harness.executors.zygote")) or "zombie" in state:
                continue
            files = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if str(folder) in cmdline or any(path.startswith(str(folder)) for path in files):
            pids.append(int(entry.name))
    return pids


def start_run(tmp_path: Path, epochs: int) -> subprocess.Popen[bytes]:
    """A real `python -m harness run` of two runs (baseline, grad-clipping) in a session of its own."""
    command = [sys.executable, "-m", "harness", "run", "--tricks", "grad-clipping", "--accelerator", "cpu",
               "--dataset", "digits", "--max-epochs", str(epochs), "--repeats", "1", "--quiet", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(tmp_path: Path, pattern: str, process: subprocess.Popen[bytes], seconds: float = 300) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        found = list(tmp_path.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{pattern} never appeared: {process.communicate()[0].decode()[-2000:]}")


def no_worker_within(folder: Path, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while workers_of(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    return workers_of(folder)


def test_sigterm_is_ctrl_c_rows_kept_and_no_worker_left(tmp_path: Path) -> None:
    process = start_run(tmp_path, 200)  # the baseline ends in seconds; the trick's run is cut short
    last = wait_for(tmp_path, "run-*/checkpoints/autoencoder-cpu-grad-clipping-r0/last.ckpt", process)
    run_dir = last.parents[2]
    assert workers_of(run_dir)  # the trick's worker is running
    process.send_signal(signal.SIGTERM)  # the parent only, as `kill PID` or a scheduler sends it
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 130, output
    assert "harness: interrupted" in output and "Traceback" not in output, output
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    assert [(r["trick"], r["status"]) for r in rows] == [("baseline", "ok")]
    assert no_worker_within(run_dir, 10) == []


def test_sigkill_of_the_parent_kills_the_worker(tmp_path: Path) -> None:
    process = start_run(tmp_path, 1_000_000)  # the worker would train for hours if left alone
    last = wait_for(tmp_path, "run-*/checkpoints/autoencoder-cpu-baseline-r0/last.ckpt", process)
    run_dir = last.parents[2]
    assert workers_of(run_dir)
    process.kill()  # SIGKILL: no handler runs in the parent
    process.communicate(timeout=60)
    leftover = no_worker_within(run_dir, 30)
    for pid in leftover:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert leftover == []
