"""Was the machine ours during fit? The CPU time other processes took while a run trained.

A run's timings are only its own if nothing else competed for the CPUs. On this project's 2-core
machine a concurrent test suite slowed the seed autoencoder from ~36,000 to 222 samples/s, and
nothing in the run itself could tell that from a slow trick. Linux's ``/proc/stat`` counts the
busy CPU time of the whole machine; subtracting the run's own CPU time (every rank's, under DDP)
leaves what other processes used. Above ``FOREIGN_WARN`` of the machine's capacity the row gets a
warning. It reads the machine as ``/proc/stat`` shows it: in a container, that can be the host.

The window is the training loop, from ``on_train_start`` to ``on_train_end``: under DDP every rank
exists by then (rank 0 starts the others inside ``fit``, and their start-up would otherwise count
as another process's work), and the ranks' windows line up at the process group's barrier.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from harness.trick import add_warning

FOREIGN_WARN = 0.15  # share of all CPUs' time used by other processes during fit
# Below this much CPU capacity in the window (CPU-seconds, all CPUs together) the 10 ms ticks of
# /proc/stat make the share too coarse to warn on; a contended run is slowed past it anyway.
MIN_WINDOW_CPU_S = 1.0
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """Seconds since boot: the machine's busy and total CPU time, and this process's own CPU time."""

    busy: float
    total: float
    own: float


def own_cpu_seconds() -> float:
    """CPU time of this process and of the processes it started: its reaped children (RUSAGE_CHILDREN)
    and its live descendants (``/proc``), such as DataLoader workers or inductor's compile workers,
    which would otherwise read as another process's load (torch.compile runs read ~45% "foreign").
    The other ranks of a distributed run are left out: each counts itself."""
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime + _descendants_cpu_seconds()


def _descendants_cpu_seconds() -> float:
    """utime + stime (and their reaped children's) of this process's live descendants; 0 without /proc."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, CPU seconds)
    hertz = os.sysconf("SC_CLK_TCK")
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return 0.0
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
        stats[int(entry)] = (int(fields[1]), sum(int(value) for value in fields[11:15]) / hertz)
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if _is_worker(pid):  # another rank of this run: it reports its own CPU time
            continue
        total += stats[pid][1]
        stack += children.get(pid, [])
    return total


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"harness.worker" in cmdline.read()
    except OSError:
        return False


def read_cpu_times(stat: Path = PROC_STAT) -> CpuTimes | None:
    """The machine's CPU counters now; None where there is no ``/proc/stat`` (not Linux)."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user and nice]
    ticks = [int(value) for value in fields[1:9]]
    idle = ticks[3] + ticks[4]
    hertz = os.sysconf("SC_CLK_TCK")
    return CpuTimes(busy=(sum(ticks) - idle) / hertz, total=sum(ticks) / hertz, own=own_cpu_seconds())


def foreign_share(before: CpuTimes, after: CpuTimes, own_seconds: float) -> float | None:
    """Share of the machine's CPU time between two readings that other processes used.

    ``own_seconds``: the CPU time this run used meanwhile (summed over its processes). Clipped to
    [0, 1]: the counters tick at 1/CLK_TCK, so a short window can come out slightly negative.
    """
    total = after.total - before.total
    if total <= 0:
        return None
    foreign = (after.busy - before.busy) - own_seconds
    return min(max(foreign / total, 0.0), 1.0)


def contention_warning(share: float | None, window_cpu_s: float, threads: int | None = None, cpus: int | None = None) -> str:
    """The warning a row carries when other processes took a large share of the CPUs ('' when not).

    With ``threads`` (torch's intra-op threads during fit) it also names oversubscription: the CPUs
    that other processes kept busy (their share of the machine, rounded to whole CPUs) plus this run's
    threads exceed the machine's CPUs. OpenMP threads then wait on siblings the scheduler took away:
    on this project's 2-core machine one busy neighbour cut the seed model's speed ~90-fold, not by half.
    """
    if share is None or window_cpu_s < MIN_WINDOW_CPU_S:
        return ""
    cpus = cpus or os.cpu_count() or 1
    busy = round(share * cpus)
    oversubscribed = threads is not None and busy >= 1 and busy + threads > cpus
    if share <= FOREIGN_WARN and not oversubscribed:
        return ""
    text = (
        f"other processes used {share:.0%} of the machine's CPU time during fit: the timings are not this "
        "run's alone; rerun on an idle machine"
    )
    if oversubscribed:
        text += (
            f"; oversubscribed: about {busy} of {cpus} CPUs were busy elsewhere while this run used {threads} torch "
            "threads, the likely cause of a collapse in speed (try --tricks cpu-threads)"
        )
    return text


def torch_threads() -> dict[str, int]:
    """torch's intra-op and inter-op thread counts now: what a loop started now trains with."""
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def record_contention(
    details: dict[str, Any], before: CpuTimes | None, after: CpuTimes | None, own_seconds: float, threads: int | None
) -> None:
    """Put a training window's foreign CPU share, and its warning when there is one, into a row's details.

    One place for the harness's rows (harness.worker) and the plain loop's (harness.parity), so that
    both carry the same reading and the same words.
    """
    if before is None or after is None:
        return
    share = foreign_share(before, after, own_seconds)
    if share is None:
        return
    details["foreign_cpu_share"] = round(share, 3)
    warning = contention_warning(share, after.total - before.total, threads)
    if warning:
        add_warning(details, warning)


class ContentionMonitor(pl.Callback):
    """Reads the CPU counters when training starts and ends (every rank reads its own), and the
    thread counts torch trains with."""

    def __init__(self) -> None:
        self.before: CpuTimes | None = None
        self.after: CpuTimes | None = None
        self.threads: dict[str, int] = {}  # torch's thread pools as training starts: what fit ran with

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.threads = torch_threads()
        self.before, self.after = read_cpu_times(), None

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after = read_cpu_times()

    @property
    def own_seconds(self) -> float:
        """This process's CPU time in the window (0 when a reading is missing)."""
        return self.after.own - self.before.own if self.before is not None and self.after is not None else 0.0
