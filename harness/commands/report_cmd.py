"""``python -m harness report RUN_DIR``: re-render a run's report files from its results.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError
from harness.report import write_report
from harness.spec import read_results

NAME = "report"
HELP = "Re-render results.csv and report.md of a run (a partial one too) from its results.jsonl."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder written by 'python -m harness run'")


def main(args: argparse.Namespace) -> int:
    results_path = args.run_dir / "results.jsonl"
    if not results_path.is_file():
        raise UserError(f"{results_path} does not exist; give a run folder written by 'python -m harness run'")
    results = read_results(results_path)
    if not results:
        raise UserError(f"{results_path} holds no results")
    print(write_report(args.run_dir, results))
    print(f"\nReport: {args.run_dir / 'report.md'}")
    return 0
