"""The default executor: each run in turn, in its own process on this machine (fork server or spawn)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.executors import runner
from harness.spec import Result, RunSpec


class LocalExecutor:
    """Runs specs one after another: a run measures this machine alone, with no sibling run competing
    for its cores or memory bandwidth (the measuring protocol's isolation)."""

    name = "local"

    def __init__(self, isolation: str | None = None) -> None:
        self.isolation = isolation  # "fork", "spawn", or None for the platform's default

    def results(self, specs: Iterable[RunSpec], run_dir: Path, timeout_s: float | None) -> Iterator[Result]:
        # through the module: run_one is the one seam where a test (or a wrapper) replaces how one run runs
        with runner.launchers(self.isolation, run_dir) as using:
            for spec in specs:
                yield runner.run_one(spec, run_dir, timeout_s, using=using)
