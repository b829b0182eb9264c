"""Run each RunSpec in its own child process and append each Result to results.jsonl at once.

A fresh process per run is the isolation the measuring protocol asks for (no allocator, thread or
autocast state carried over; peak memory is the child's own). Each finished result is appended and
flushed before the next run starts, so a crash or Ctrl-C loses at most the run in progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from harness.lifeline import PARENT_ENV
from harness.rundir import plain_name
from harness.spec import Result, RunSpec, append_row

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    """The parent's environment, with this project importable even when it is not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[PARENT_ENV] = str(os.getpid())  # the worker dies with this process (harness.lifeline)
    return env


def run_one(spec: RunSpec, run_dir: Path, timeout_s: float | None = None, plain: bool = False) -> Result:
    """Run one spec in a child process; a crash, kill or timeout becomes a failed Result.

    The run id names files under ``run_dir``; it is checked to be a plain name before anything is
    written (a resumed spec's comes from plan.json).
    """
    plain_name(spec.run_id, "run id")
    specs_dir, logs_dir = run_dir / "specs", run_dir / "logs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    spec_path = specs_dir / f"{spec.run_id}.json"
    result_path = specs_dir / f"{spec.run_id}.result.json"
    log_path = logs_dir / f"{spec.run_id}.log"
    spec_path.write_text(spec.to_json())
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "harness.worker", *(["--plain"] if plain else []), str(spec_path), str(result_path)]
    with log_path.open("w") as log:
        try:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env(), timeout=timeout_s, check=False,
            )
            returncode: int | None = completed.returncode
        except subprocess.TimeoutExpired:
            returncode = None
    if result_path.exists():
        return Result.from_json_file(result_path)
    if returncode is None:
        reason = f"timed out after {timeout_s:g} s"
    elif returncode < 0:
        name = signal.Signals(-returncode).name
        reason = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        reason = f"worker exited with code {returncode}: {last_error_line(log_path)}"
    return Result(
        run_id=spec.run_id, trick=spec.label, workload=spec.workload, dataset=spec.dataset,
        accelerator=spec.accelerator, repeat=spec.repeat, status="failed", reason=reason,
        batch_size=spec.batch_size, seed=spec.seed, details={"log": str(log_path.relative_to(run_dir))},
    )


def last_error_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
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
) -> list[Result]:
    """Run every spec in order, appending each result to ``run_dir/results.jsonl`` as it finishes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    results_path = run_dir / "results.jsonl"
    results = []
    bar = tqdm(total=len(specs), unit="run", file=sys.stderr, disable=not show_progress, dynamic_ncols=True)
    try:
        for spec in specs:
            bar.set_description(f"{spec.workload}/{spec.accelerator}/{spec.label}")
            result = run_one(spec, run_dir, timeout_s)
            append_row(results_path, result)
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.update(1)
    finally:
        bar.close()
    return results
