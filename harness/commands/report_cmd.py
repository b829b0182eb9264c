"""``python -m harness report RUN_DIR``: re-render a run's report files from its results.jsonl."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.errors import UserError
from harness.report import write_report
from harness.spec import read_results


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    """``--target-val-loss``, shared with ``run``."""
    parser.add_argument(
        "--target-val-loss", type=float, default=None, metavar="LOSS",
        help="val loss that time-to-target is measured against (default: each group's baseline final val loss)",
    )


def check_target(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise UserError(f"--target-val-loss must be a finite number, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by 'python -m harness run'")
    add_target_argument(parser)


def main(args: argparse.Namespace) -> int:
    target = check_target(args.target_val_loss)
    results_path = args.run_dir / "results.jsonl"
    if not results_path.is_file():
        raise UserError(f"{results_path} does not exist; give a run folder written by 'python -m harness run'")
    results = read_results(results_path)
    if not results:
        raise UserError(f"{results_path} holds no results")
    print(write_report(args.run_dir, results, target_val_loss=target))
    print(f"\nReport: {args.run_dir / 'report.html'} (and report.md)")
    return 0
