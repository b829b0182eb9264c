"""``--profiler simple|advanced|pytorch``: Lightning's own profilers, their output kept in the run folder.

Lightning writes one report per stage (``fit-profile.txt``, ``test-profile.txt``...; the PyTorch
profiler adds Chrome traces, ``*.pt.trace.json``) into ``<run_dir>/profiles/<run_id>/``; the row
lists those files and the report links them. A profiler slows the steps it watches (the PyTorch
profiler by far the most), so a profiled row's samples/s is not comparable with an unprofiled one:
the row says so.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.profilers import AdvancedProfiler, Profiler, PyTorchProfiler, SimpleProfiler

PROFILERS = ("simple", "advanced", "pytorch")
PROFILE_NOTE = "profiled with {name}: samples/s includes the profiler's overhead; compare it only with rows profiled alike"


def profile_dir(run_dir: str | Path, run_id: str) -> Path:
    return Path(run_dir) / "profiles" / run_id


def make_profiler(name: str, run_dir: str | Path, run_id: str) -> Profiler | None:
    """The Lightning profiler called ``name`` writing into this run's profile folder; None for ``""``."""
    if not name:
        return None
    folder = profile_dir(run_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if name == "simple":
        return SimpleProfiler(dirpath=folder, filename="profile", extended=True)
    if name == "advanced":
        return AdvancedProfiler(dirpath=folder, filename="profile")
    if name == "pytorch":
        return PyTorchProfiler(dirpath=folder, filename="profile", export_to_chrome=True)
    raise ValueError(f"unknown profiler {name!r}; valid choices: {', '.join(PROFILERS)}")


def profile_files(run_dir: str | Path, run_id: str) -> list[str]:
    """The files the profiler wrote, relative to the run folder, sorted."""
    folder = profile_dir(run_dir, run_id)
    if not folder.is_dir():
        return []
    return sorted(str(path.relative_to(run_dir)) for path in folder.rglob("*") if path.is_file())
