"""``python -m harness run``: the baseline and the chosen tricks, each in its own process, then a report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import env
from harness.commands.options import (
    add_executor_arguments, add_training_arguments, add_workflow_arguments, check_devices, executor_from_args, new_run_dir,
    resolve_accelerators, run_options,
)
from harness.commands.report_cmd import add_target_argument, check_target
from harness.errors import UserError
from harness.executors import Executor
from harness.executors.runner import run_all
from harness.measuring.estimate import estimate_text
from harness.report import write_report
from harness.runfolder.plan import check_trick_runs, parse_params, parse_tricks, plan_runs
from harness.runfolder.rundir import rows_kept_on_os_error, write_plan, writer_lock
from harness.spec import BASELINE, Result, RunSpec, append_row
from harness.workload import WORKLOADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tricks", default="all", help="'all', names, globs (grad-*), comma-separated; A+B runs A and B together (default: all)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="TRICK.PARAM=VALUE", help="set a trick parameter, e.g. grad-clipping.value=0.5 (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every cell, in a shuffled order per repeat; verdicts judge speed over them (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder that receives the run folder (default: reports/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    add_target_argument(parser)
    add_training_arguments(parser)
    add_workflow_arguments(parser)
    add_executor_arguments(parser)


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
    executor = executor_from_args(args)
    local = executor.name == "local"
    accelerators = resolve_accelerators(args.accelerator, local)
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    options = run_options(args)
    check_devices(accelerators, options.devices, local)
    run_dir = new_run_dir(args.out)
    # a `resume` of this folder while it runs is refused, not run alongside; a full disk keeps the finished rows
    with writer_lock(run_dir), rows_kept_on_os_error(run_dir):
        specs = plan_runs(
            trick_runs, workloads, accelerators, args.repeats, options, params.tricks, str(run_dir.resolve()), params.workloads,
            order_seed=options.seed,
        )
        environment = env.collect()
        environment["isolation"] = args.isolation  # each row records the one it got (harness.executors.isolation)
        environment["executor"] = executor.name  # a ray row records its host and Ray's CUDA_VISIBLE_DEVICES
        (run_dir / "env.json").write_text(json.dumps(environment, indent=2) + "\n")
        write_plan(run_dir, specs, environment["command"], {
            "target_val_loss": target_val_loss,
            "order": "baseline and tricks shuffled within each repeat (plan.plan_runs); specs are in run order",
            "order_seed": options.seed,
        })
        estimate = estimate_text(specs) if local else "no estimate before the first run (Ray runs them side by side)"
        print(f"harness: {len(specs)} runs -> {run_dir}; {estimate}", file=sys.stderr)

        results = run_with_progress(specs, run_dir, args.timeout, args.quiet, args.isolation, executor)
        return report_and_exit_code(run_dir, results, target_val_loss, environment)


# A baseline that failed for one of these reasons may have failed for a reason a trick changes
# (precision, clipping, a smaller batch): the tricks still run.
TRICK_MAY_CHANGE = ("out of memory", "non-finite loss", "timed out", "killed by")


def fails_every_run(result: Result) -> bool:
    """A baseline that failed before any training step, for a reason no trick changes (the module's
    constructor, an import, a ``prepare_data`` that needs a missing package or the network)."""
    return (
        result.trick == BASELINE and result.status == "failed" and not result.steps and result.fit_s is None
        and not result.reason.startswith(TRICK_MAY_CHANGE)
    )


class StopAfterFailedBaseline(list):  # type: ignore[type-arg]
    """The plan's specs, handed to the runner one at a time: once a workload's baseline has failed in a
    way every run of it would (:func:`fails_every_run`), its remaining runs on that accelerator are not
    started; each gets a failed row (so ``resume --retry-failed`` reruns it once fixed) with the
    baseline's reason, instead of paying a start-up to fail the same way. (The runner, harness/executors/runner.py,
    iterates the list; ``observe`` is its ``on_result``.)
    """

    def __init__(self, specs: list[RunSpec], run_dir: Path, line: Callable[[Result], str] = lambda r: progress_line(r)) -> None:
        super().__init__(specs)
        self.line = line
        self.results_path = run_dir / "results.jsonl"
        self.stopped: dict[tuple[str, str], Result] = {}
        self.not_run: list[Result] = []

    def observe(self, result: Result) -> None:
        tqdm.write(self.line(result), file=sys.stderr)
        if fails_every_run(result):
            self.stopped.setdefault((result.workload, result.accelerator), result)

    def __iter__(self) -> Iterator[RunSpec]:
        for spec in list.__iter__(self):
            baseline = self.stopped.get((spec.workload, spec.accelerator))
            if baseline is None:
                yield spec
                continue
            row = Result.for_spec(
                spec, "failed",
                reason=f"not run: the baseline {baseline.run_id} failed before training, as every run of this workload would: {baseline.reason}",
                details={"not_run_because": baseline.run_id},
            )
            append_row(self.results_path, row)
            self.not_run.append(row)
            tqdm.write(self.line(row), file=sys.stderr)


def run_with_progress(
    specs: list[RunSpec], run_dir: Path, timeout_s: float | None, quiet: bool, isolation: str | None = None,
    executor: Executor | None = None,
) -> list[Result]:
    """Run the specs in order, each finished run printed as one line (above the progress bar on a terminal).

    The bar redraws itself with carriage returns: only a terminal shows that as one line. Piped into a
    file or a CI log every frame would stay, so there it is off and the log holds the per-run lines alone.
    Runs of a workload whose baseline failed before training are not started (:class:`StopAfterFailedBaseline`).
    """
    started, done = time.perf_counter(), [0]

    def line(result: Result) -> str:  # the run, then how many are left and about how long they take
        done[0] += 1
        return progress_line(result) + remaining_text(done[0], len(specs), time.perf_counter() - started)

    gate = StopAfterFailedBaseline(specs, run_dir, line)
    results = run_all(
        gate, run_dir, timeout_s=timeout_s, show_progress=not quiet and sys.stderr.isatty(), isolation=isolation,
        on_result=gate.observe, executor=executor,
    )
    order = {spec.run_id: index for index, spec in enumerate(specs)}
    return sorted([*results, *gate.not_run], key=lambda r: order.get(r.run_id, len(order)))


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
