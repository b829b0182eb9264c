"""Run each RunSpec in its own process and append each Result to results.jsonl at once.

A fresh process per run is the isolation the measuring protocol asks for (no allocator, thread or
autocast state carried over; peak memory is the process's own). The process is forked from a
pre-imported server or spawned cold (harness.executors.isolation); each row records which. Each finished
result is appended and flushed before the next run starts, so a crash or Ctrl-C loses at most the
run in progress.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from harness.errors import os_error_line
from harness.executors import Executor
from harness.executors.isolation import ForkServer, ForkServerError, Job, Launcher, Spawn, child_env, default_isolation, fork_refusal
from harness.executors.scratch import SCRATCH_ENV, run_scratch, sweep_stale_scratch
from harness.runfolder.rundir import plain_name
from harness.spec import Result, RunSpec, append_row

SERVER_LOG = "forkserver.log"  # under <run>/logs/


class Launchers:
    """The launcher each spec gets under one ``--isolation`` choice, and why when it is not that one.

    With ``fork``, one server serves the whole invocation; a run it cannot serve, or every run after
    the server failed to start, is spawned, and its row says why (never a silent change).
    """

    def __init__(self, isolation: str, run_dir: Path) -> None:
        self.isolation = isolation
        self.server = ForkServer(run_dir / "logs" / SERVER_LOG) if isolation == "fork" else None
        self.spawn = Spawn()
        self.broken = ""  # why the fork server is not used any more

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def choose(self, spec: RunSpec) -> tuple[Launcher, str]:
        if self.server is None:
            return self.spawn, ""
        refusal = fork_refusal(spec) or self.broken
        return (self.spawn, refusal) if refusal else (self.server, "")


@contextmanager
def launchers(isolation: str | None, run_dir: Path) -> Iterator[Launchers]:
    """The launchers of one invocation's runs, closed at the end. First, the scratch folders that an
    earlier harness killed outright left in the temp dir go (harness.executors.scratch)."""
    sweep_stale_scratch()
    chosen = Launchers(isolation or default_isolation(), run_dir)
    try:
        yield chosen
    finally:
        chosen.close()


def run_one(
    spec: RunSpec, run_dir: Path, timeout_s: float | None = None, plain: bool = False, using: Launchers | None = None
) -> Result:
    """Run one spec in its own process; a crash, kill or timeout becomes a failed Result.

    The run id names files under ``run_dir``; it is checked to be a plain name before anything is
    written (a resumed spec's comes from plan.json). Without ``using``, the run is spawned. The worker
    gets a scratch folder of its own in the temp dir (``$HARNESS_RUN_SCRATCH``), which this process
    removes when the worker has ended, however it ended (harness.executors.scratch).
    """
    plain_name(spec.run_id, "run id")
    specs_dir, logs_dir = run_dir / "specs", run_dir / "logs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    with run_scratch(spec.run_id) as scratch:
        job = Job(
            spec_path=specs_dir / f"{spec.run_id}.json", result_path=specs_dir / f"{spec.run_id}.result.json",
            log_path=logs_dir / f"{spec.run_id}.log", plain=plain, env={**child_env(), SCRATCH_ENV: scratch}, cwd=os.getcwd(),
        )
        job.spec_path.write_text(spec.to_json())
        job.result_path.unlink(missing_ok=True)
        launcher, note = (using.choose(spec) if using is not None else (Spawn(), ""))
        try:
            returncode = launcher.run(job, timeout_s)
        except ForkServerError as error:  # the server, not the run: spawn this run and every later one
            assert using is not None
            using.broken = f"{error}; spawned instead"
            print(f"harness: warning: {using.broken}", file=sys.stderr)
            launcher, note = using.spawn, using.broken
            returncode = launcher.run(job, timeout_s)
    result = _result(spec, run_dir, job, returncode, timeout_s)
    result.isolation = launcher.name
    result.host = socket.gethostname()  # the worker ran here: on a Ray cluster, some node
    if note:
        result.details["isolation_note"] = note
    return result


def _result(spec: RunSpec, run_dir: Path, job: Job, returncode: int | None, timeout_s: float | None) -> Result:
    if job.result_path.exists():
        return Result.from_json_file(job.result_path)
    if returncode is None:
        reason = f"timed out after {timeout_s:g} s"
    elif returncode < 0:
        name = signal.Signals(-returncode).name
        reason = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        reason = f"worker exited with code {returncode}: {last_error_line(job.log_path)}"
    if no_space_left(run_dir):  # a worker that could not write its result or log on a full disk says why it died
        reason = f"no space left on the disk of {str(run_dir)!r}: {reason}"
    return Result.for_spec(spec, "failed", reason=reason, details={"log": str(job.log_path.relative_to(run_dir))})


def no_space_left(run_dir: Path, floor_bytes: int = 1 << 20) -> bool:
    """Whether the file system holding the run folder has (almost) no room left for a normal user."""
    try:
        return shutil.disk_usage(run_dir).free < floor_bytes
    except OSError:
        return False


def last_error_line(log_path: Path) -> str:
    """The worker's last error line in its log; a log that could not be written or read is said so."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {os_error_line(error)})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


def run_all(
    specs: list[RunSpec],
    run_dir: Path,
    timeout_s: float | None = None,
    on_result: Callable[[Result], None] | None = None,
    show_progress: bool = True,
    isolation: str | None = None,
    executor: Executor | None = None,
) -> list[Result]:
    """Run every spec, appending each result to ``run_dir/results.jsonl`` as it finishes.

    ``executor``: who runs them (harness.executors); by default the local one, in order, each with
    ``isolation`` ("fork" or "spawn", harness.executors.isolation; None for this platform's default). Results
    come back in the order they finish, which under Ray need not be the plan's.
    """
    if executor is None:
        from harness.executors.local import LocalExecutor  # it imports this module

        executor = LocalExecutor(isolation)
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "results.jsonl"
    results = []
    bar = tqdm(total=len(specs), unit="run", file=sys.stderr, disable=not show_progress, dynamic_ncols=True)
    stream = executor.results(specs, run_dir, timeout_s)
    try:
        for result in stream:
            append_row(results_path, result)
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.set_description(f"{result.workload}/{result.accelerator}/{result.trick}")
            bar.update(1)
    finally:
        close = getattr(stream, "close", None)  # a generator: its runs in progress are stopped at once
        if close is not None:
            close()
        bar.close()
    return results
