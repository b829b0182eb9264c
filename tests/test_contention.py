"""The contention check: a run that shared the CPUs with other processes says so in its row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.measuring.contention import CpuTimes, contention_warning, foreign_share, read_cpu_times
from harness.spec import RunSpec
from harness.worker import execute


def test_foreign_share_is_the_busy_time_the_run_did_not_use_itself() -> None:
    before = CpuTimes(busy=100.0, total=400.0, own=5.0)
    after = CpuTimes(busy=130.0, total=440.0, own=15.0)  # 40 s of capacity, 30 busy, 10 of them ours
    assert foreign_share(before, after, own_seconds=10.0) == pytest.approx(0.5)
    assert foreign_share(before, after, own_seconds=31.0) == 0.0  # tick rounding never goes negative
    assert foreign_share(before, before, own_seconds=0.0) is None
    assert contention_warning(0.5, 40.0).startswith("other processes used 50% of the machine's CPU time")
    assert contention_warning(0.05, 40.0) == "" and contention_warning(None, 40.0) == ""
    assert contention_warning(0.5, 0.3) == ""  # a window of a few ticks is too coarse to judge


def test_oversubscription_is_named_when_busy_cpus_plus_threads_exceed_the_cpus() -> None:
    # one of 2 CPUs busy elsewhere, 2 torch threads here: oversubscribed, even under the 15% share warning
    assert "oversubscribed: about 1 of 2 CPUs were busy elsewhere while this run used 2 torch threads" in contention_warning(0.3, 40.0, threads=2, cpus=2)
    assert "oversubscribed" not in contention_warning(0.3, 40.0, threads=1, cpus=2)  # 1 + 1 fits
    assert contention_warning(0.1, 40.0, threads=2, cpus=2) == ""  # a fifth of a CPU is not a busy CPU
    assert "oversubscribed" in contention_warning(0.1, 40.0, threads=16, cpus=16)  # 2 busy + 16 > 16


def test_proc_stat_is_read(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 ...\n")
    times = read_cpu_times(stat)
    assert times is not None and times.total > times.busy > 0
    assert read_cpu_times(tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads Linux's /proc/stat")
def test_a_run_that_shares_the_cpus_is_flagged(make_spec: Callable[..., RunSpec]) -> None:
    # spinners that are not this process's descendants (a shell starts each and exits: they are
    # orphaned), since a run counts the CPU time of the processes it started as its own
    spinners = [
        int(subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True).stdout)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        # ~800 steps: a fit window well over MIN_WINDOW_CPU_S even on a fast, idle machine (3 epochs of
        # digits, 54 steps, once ended under it, where no warning is given by design)
        result = execute(make_spec(max_epochs=2, dataset="synthetic", synthetic_size=16384, checkpoints=False))
    finally:
        for pid in spinners:
            os.kill(pid, signal.SIGKILL)
    assert result.status == "ok", result.reason
    assert result.details["foreign_cpu_share"] > 0.15
    assert any(w.startswith("other processes used") for w in result.details.get("warnings", [])), result.details


def test_cpu_time_of_the_runs_own_child_processes_is_its_own_not_foreign() -> None:
    """A compile worker or DataLoader worker busy beside the run is the run's load (torch.compile's
    inductor workers read ~45% "foreign" before), while another rank of the run counts itself."""
    import subprocess
    import sys
    import time

    from harness.measuring.contention import _descendants_cpu_seconds

    before = _descendants_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while _descendants_cpu_seconds() - before < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _descendants_cpu_seconds() - before >= 0.5
    finally:
        child.kill()
        child.wait()
