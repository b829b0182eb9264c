"""``python -m harness compare RUN_A RUN_B``: per matching row, B/A ratios; ``--fail-above`` for CI.

Exit codes: 0 fine, 1 a throughput drop or peak memory growth beyond ``--fail-above`` (the rows are
named), 2 a bad argument or a folder that is not a run (no results.jsonl).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError
from harness.report.compare import compare_results, format_comparison, parse_threshold
from harness.spec import Result, read_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", type=Path, help="the reference run folder (A)")
    parser.add_argument("run_b", type=Path, help="the run folder compared against it (B)")
    parser.add_argument(
        "--fail-above", default=None, metavar="THRESHOLD",
        help="exit 1 when any row's throughput drops, or peak memory grows, by more than this (10%% or 0.1)",
    )


def load_run(run_dir: Path) -> list[Result]:
    path = run_dir / "results.jsonl"
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a run folder written by 'python -m harness run'")
    results = read_results(path)
    if not results:
        raise UserError(f"{path} holds no results")
    return results


def main(args: argparse.Namespace) -> int:
    threshold = parse_threshold(args.fail_above) if args.fail_above is not None else None
    comparison = compare_results(load_run(args.run_a), load_run(args.run_b), threshold)
    print(format_comparison(comparison, str(args.run_a), str(args.run_b), threshold))
    if comparison.regressions:
        print(f"harness: {len(comparison.regressions)} regression(s) beyond --fail-above {args.fail_above}: "
              + "; ".join(str(r) for r in comparison.regressions), file=sys.stderr)
        return 1
    return 0
