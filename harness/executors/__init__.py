"""Executors: the one seam between a plan's RunSpecs and the Results that come back.

An executor takes RunSpecs and yields Results as they finish (in any order); the runner appends each
to results.jsonl at once, so plan, worker and report do not care which executor ran a run.
``local`` (the default) runs them one after another on this machine; ``ray`` makes each run one Ray
task on a cluster (or a local Ray instance) and needs the optional ``ray`` extra.

The folder also holds how a run gets its process, which both executors share: runner (one RunSpec in
its own process, each Result appended at once), isolation (fork from the pre-imported server or spawn
``python -m harness.worker``), zygote (the fork server, ``python -m harness.executors.zygote``),
lifeline (a worker dies with its parent), scratch (a per-run temp folder the starter removes), and
shipping (a Ray node's files sent home). Kept free of heavy imports (Ray, torch): this module is read
by every ``run``, by the fork server and by every worker (through lifeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from harness.errors import UserError
from harness.spec import Result, RunSpec

EXECUTORS = ("local", "ray")
DEFAULT_EXECUTOR = "local"
RAY_FILES = ("auto", "shared", "ship")  # --ray-files: how a run's files reach the run folder (executors.ray_tasks)


class Executor(Protocol):
    name: str

    def results(self, specs: Iterable[RunSpec], run_dir: Path, timeout_s: float | None) -> Iterator[Result]:
        """Run every spec, each in a fresh process, and yield its Result as soon as it finishes.

        ``specs`` is consumed lazily, so that a plan may stop handing out runs it learns are pointless
        (run_cmd.StopAfterFailedBaseline). A run that crashes, is killed or times out is a failed
        Result, never an exception; an interrupt (Ctrl-C) stops the runs in progress and propagates.
        """
        ...


def make_executor(
    name: str, isolation: str | None = None, ray_address: str | None = None, cpus_per_run: int = 1, ray_files: str | None = None,
    ray_gpu_wait_s: float | None = None,
) -> Executor:
    """The executor a command line asked for; a UserError (exit 2) for a bad choice or a missing Ray."""
    if name not in EXECUTORS:
        raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        for option, value in (("--ray-address", ray_address), ("--ray-files", ray_files), ("--ray-gpu-wait", ray_gpu_wait_s)):
            if value is not None:
                raise UserError(f"{option} {value!r} needs --executor ray (got --executor local)")
        from harness.executors.local import LocalExecutor

        return LocalExecutor(isolation)
    from harness.executors.ray_tasks import RayExecutor, check_ray_available

    check_ray_available()
    return RayExecutor(address=ray_address, cpus_per_run=cpus_per_run, files=ray_files or "auto", gpu_wait_s=ray_gpu_wait_s)
