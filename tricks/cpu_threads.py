"""CPU threads: how many threads torch's intra-op and inter-op pools use, the first switch to try on a CPU.

PyTorch docs: https://pytorch.org/docs/stable/notes/cpu_threading_torchscript_inference.html
torch starts one intra-op thread per core it sees. On a small or shared machine that is often too
many: OpenMP threads spin waiting for a sibling that the scheduler has descheduled. On this project's
2-core machine the seed autoencoder at batch 64 ran 23.5k samples/s with 1 thread against 10.0k with 2
in a plain PyTorch loop, and 20.2k against 7.0k with one other busy process beside it.

The trick sets ``torch.set_num_threads`` (and ``set_num_interop_threads`` where torch still allows
it), plus ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for processes the run starts (DataLoader workers),
in the run's own process, before its Trainer exists; one process per run means it cannot leak into
the next run. What torch reports afterwards goes into the row. On a GPU run the model's work is on the
GPU, so the trick is skipped there unless ``on_gpu=true``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick

CPUINFO = Path("/proc/cpuinfo")


def physical_cores(cpuinfo: Path = CPUINFO) -> int:
    """Physical cores this process may use: distinct (physical id, core id) pairs in /proc/cpuinfo,
    capped by the CPUs the process is allowed to run on; the logical count where that is unknown."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = cpuinfo.read_text()
    except OSError:
        return allowed
    cores, physical = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return max(1, min(len(cores), allowed)) if cores else allowed


@register_trick
@dataclass
class CpuThreads(Trick):
    name = "cpu-threads"
    summary = "torch.set_num_threads(n) (and inter-op threads, OMP/MKL variables) in the run's process; n=auto: physical cores."
    source = "https://pytorch.org/docs/stable/notes/cpu_threading_torchscript_inference.html"

    n: str = "1"  # a whole number >= 1, or "auto" for the physical cores
    interop: str = "1"  # inter-op threads: a whole number >= 1, "same" (as n) or "keep" (torch's default)
    on_gpu: bool = False  # a GPU run's model work is on the GPU: skipped there unless asked for

    def __post_init__(self) -> None:
        if self.n != "auto" and not (self.n.isdigit() and int(self.n) >= 1):
            raise ValueError(f"n must be a whole number >= 1 or 'auto', got {self.n!r}")
        if self.interop not in ("same", "keep") and not (self.interop.isdigit() and int(self.interop) >= 1):
            raise ValueError(f"interop must be a whole number >= 1, 'same' or 'keep', got {self.interop!r}")

    def threads(self) -> int:
        return physical_cores() if self.n == "auto" else int(self.n)

    def apply(self, setup: Setup) -> None:
        if setup.accelerator != "cpu" and not self.on_gpu:
            raise TrickSkipped(
                f"cpu-threads on a {setup.accelerator} run: the model's work is on the device, not the CPU's "
                "thread pool; set cpu-threads.on_gpu=true to measure the host side anyway"
            )
        before = torch.get_num_threads()
        n = self.threads()
        torch.set_num_threads(n)
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(n)  # for processes the run starts, e.g. DataLoader workers
        setup.details.update(cpu_threads_requested=self.n, torch_threads_before=before, torch_threads=torch.get_num_threads())
        if self.interop != "keep":
            wanted = n if self.interop == "same" else int(self.interop)
            try:
                torch.set_num_interop_threads(wanted)
            except RuntimeError as error:  # torch allows it once, before any inter-op work in the process
                setup.details["interop_note"] = f"inter-op threads left at {torch.get_num_interop_threads()}: {error}"
        setup.details["torch_interop_threads"] = torch.get_num_interop_threads()
