"""``python -m harness run``: the baseline and the chosen tricks, each in its own process, then a report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import env
from harness.commands.options import (
    add_training_arguments, add_workflow_arguments, check_devices, new_run_dir, resolve_accelerators, run_options,
)
from harness.commands.report_cmd import add_target_argument, check_target
from harness.errors import UserError
from harness.plan import check_trick_runs, parse_params, parse_tricks, plan_runs
from harness.report import write_report
from harness.rundir import write_plan, writer_lock
from harness.runner import run_all
from harness.spec import Result, RunSpec
from harness.workload import WORKLOADS

NAME = "run"
HELP = "Run the baseline and the chosen tricks under the same conditions and write a report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tricks", default="all", help="'all', names, globs (grad-*), comma-separated; A+B runs A and B together (default: all)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="TRICK.PARAM=VALUE", help="set a trick parameter, e.g. grad-clipping.value=0.5 (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every cell, in a shuffled order per repeat; verdicts judge speed over them (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder that receives the run folder (default: reports/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    add_target_argument(parser)
    add_training_arguments(parser)
    add_workflow_arguments(parser)


def progress_line(result: Result) -> str:
    if result.status != "ok":
        return f"  {result.status:<7} {result.trick:<32} {result.reason}"
    speed = f"{result.samples_per_s:,.0f} samples/s" if result.samples_per_s else "no throughput"
    val = f"val_loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    return f"  {result.status:<7} {result.trick:<32} {speed:>20}  {val}  {result.wall_s:.1f} s"


def main(args: argparse.Namespace) -> int:
    target_val_loss = check_target(args.target_val_loss)
    trick_runs = parse_tricks(args.tricks)
    params = parse_params(args.param)
    for label, warnings in check_trick_runs(trick_runs, params.tricks).items():  # refusals exit 2 here
        for warning in warnings:
            print(f"harness: warning: {label}: {warning}", file=sys.stderr)
    workloads = WORKLOADS.select(args.workload)
    accelerators = resolve_accelerators(args.accelerator)
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    options = run_options(args)
    check_devices(accelerators, options.devices)
    run_dir = new_run_dir(args.out)
    with writer_lock(run_dir):  # a `resume` of this folder while it runs is refused, not run alongside
        specs = plan_runs(
            trick_runs, workloads, accelerators, args.repeats, options, params.tricks, str(run_dir.resolve()), params.workloads,
            order_seed=options.seed,
        )
        environment = env.collect()
        environment["isolation"] = args.isolation  # each row records the one it got (harness.isolation)
        (run_dir / "env.json").write_text(json.dumps(environment, indent=2) + "\n")
        write_plan(run_dir, specs, environment["command"], {
            "target_val_loss": target_val_loss,
            "order": "baseline and tricks shuffled within each repeat (plan.plan_runs); specs are in run order",
            "order_seed": options.seed,
        })
        print(f"harness: {len(specs)} runs -> {run_dir}", file=sys.stderr)

        results = run_with_progress(specs, run_dir, args.timeout, args.quiet, args.isolation)
        return report_and_exit_code(run_dir, results, target_val_loss, environment)


def run_with_progress(
    specs: list[RunSpec], run_dir: Path, timeout_s: float | None, quiet: bool, isolation: str | None = None
) -> list[Result]:
    """Run the specs in order, each finished run printed as one line (above the progress bar on a terminal).

    The bar redraws itself with carriage returns: only a terminal shows that as one line. Piped into a
    file or a CI log every frame would stay, so there it is off and the log holds the per-run lines alone.
    """
    started, done = time.perf_counter(), [0]

    def show(result: Result) -> None:
        done[0] += 1
        tqdm.write(progress_line(result) + remaining_text(done[0], len(specs), time.perf_counter() - started), file=sys.stderr)

    return run_all(
        specs, run_dir, timeout_s=timeout_s, show_progress=not quiet and sys.stderr.isatty(), isolation=isolation, on_result=show,
    )


def remaining_text(done: int, total: int, elapsed_s: float) -> str:
    """``  [3/33, about 95 s left]``: the runs so far, and the rest at their mean pace (runs differ: an estimate)."""
    if done >= total:
        return f"  [{done}/{total}]"
    left = elapsed_s / done * (total - done)
    return f"  [{done}/{total}, about {left:.0f} s left]" if left < 120 else f"  [{done}/{total}, about {left / 60:.0f} min left]"


def report_and_exit_code(
    run_dir: Path, results: list[Result], target_val_loss: float | None, environment: dict[str, Any] | None = None
) -> int:
    """Write the report, print its tables and where it is; exit code 1 when a run failed, else 0."""
    print(write_report(run_dir, results, environment, target_val_loss=target_val_loss))
    print(f"\nReport: {run_dir / 'report.html'} (and report.md)")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"harness: {len(failed)} of {len(results)} runs failed: {', '.join(r.run_id for r in failed)}", file=sys.stderr)
        return 1
    return 0
