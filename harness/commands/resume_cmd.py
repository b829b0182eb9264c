"""``python -m harness resume RUN_DIR``: finish an interrupted ``run``.

The runs of plan.json that have no row in results.jsonl are run now (in plan order); each one
whose ``checkpoints/<run_id>/last.ckpt`` exists continues from it through Lightning's
``fit(ckpt_path=...)`` instead of starting again. Rows already in results.jsonl are kept as they
are (``--retry-failed`` runs the failed ones again). The report is then rebuilt from every row.

A resumed row measures only the epochs run after the resume: its samples/s and curve cover
those, and ``details["resumed_from"]`` names the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from harness import env
from harness.commands.options import add_executor_arguments, add_isolation_argument, executor_from_args, positive_float
from harness.commands.report_cmd import add_target_argument, check_target
from harness.commands.run_cmd import report_and_exit_code, run_with_progress
from harness.runfolder.checkpoints import LAST, checkpoint_dir, relative
from harness.runfolder.rundir import RESULTS, check_run_dir, load_results, load_specs, read_plan, rows_kept_on_os_error, writer_lock
from harness.spec import Result, RunSpec, row_problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by 'python -m harness run'")
    parser.add_argument("--retry-failed", action="store_true", help="also run again the runs whose rows say failed")
    parser.add_argument("--timeout", type=positive_float, default=None, help="seconds before one run is killed and marked failed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    add_isolation_argument(parser)
    add_executor_arguments(parser)  # a sweep run with either executor can be finished with either
    add_target_argument(parser)


def to_resume(specs: list[RunSpec], results: list[Result], retry_failed: bool) -> list[RunSpec]:
    """The planned runs without a kept row, each set to continue from its last.ckpt when it has one."""
    kept = {r.run_id for r in results if not (retry_failed and r.status == "failed")}
    pending = []
    for spec in specs:
        if spec.run_id in kept:
            continue
        last = checkpoint_dir(spec.run_dir, spec.run_id) / f"{LAST}.ckpt"
        resume_from = relative(last, spec.run_dir) if spec.checkpoints and last.is_file() else ""
        pending.append(dataclasses.replace(spec, resume_from=resume_from))
    return pending


def row_run_id(line: str) -> str | None:
    """The run id of a results.jsonl line, None for a bad line (which is kept as it is: not ours to judge)."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return row["run_id"] if not row_problem(row) else None


def drop_rows(run_dir: Path, run_ids: set[str]) -> None:
    """Rewrite results.jsonl without the given runs (atomically), before they run again."""
    path = run_dir / RESULTS
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    keep = [line for line in lines if row_run_id(line) not in run_ids]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def main(args: argparse.Namespace) -> int:
    run_dir = check_run_dir(args.run_dir)
    # a second resume of this folder is refused, not run twice; a full disk keeps the finished rows
    with writer_lock(run_dir), rows_kept_on_os_error(run_dir):
        return resume(args, run_dir)


def resume(args: argparse.Namespace, run_dir: Path) -> int:
    """Run what the plan holds and the rows lack, then report; the caller holds the folder's lock."""
    executor = executor_from_args(args)
    plan = read_plan(run_dir)
    target = check_target(args.target_val_loss if args.target_val_loss is not None else plan.get("target_val_loss"))
    specs = load_specs(run_dir)
    results = load_results(run_dir)
    pending = to_resume(specs, results, args.retry_failed)
    retried = {spec.run_id for spec in pending} & {r.run_id for r in results}
    if retried:
        drop_rows(run_dir, retried)
    if pending:
        from_ckpt = sum(1 for spec in pending if spec.resume_from)
        print(
            f"harness: resuming {run_dir}: {len(specs) - len(pending)} of {len(specs)} runs kept, "
            f"{len(pending)} to run ({from_ckpt} from their last.ckpt)",
            file=sys.stderr,
        )
        environment = env.collect()
        environment["executor"] = executor.name
        (run_dir / "env-resume.json").write_text(json.dumps(environment, indent=2) + "\n")
        run_with_progress(pending, run_dir, args.timeout, args.quiet, args.isolation, executor)
    else:
        print(f"harness: nothing to resume: all {len(specs)} planned runs of {run_dir} have rows", file=sys.stderr)
    order = {spec.run_id: index for index, spec in enumerate(specs)}
    final = sorted(load_results(run_dir), key=lambda r: order.get(r.run_id, len(order)))
    return report_and_exit_code(run_dir, final, target)
