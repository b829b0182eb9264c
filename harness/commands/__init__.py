"""One module per CLI subcommand, each with add_arguments(parser) and main(args); their names and help here.

The names and one-line helps live in this table, not in the modules, so that ``--help``, a mistyped
command and the choice of a subcommand answer without importing any of them: most import torch and
Lightning (seconds), and only the chosen one is needed (see harness.cli.build_parser).
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: its name on the command line, the module that implements it, its one-line help."""

    name: str
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("list", "harness.commands.list_cmd", "List the registered tricks and workloads with their summaries and parameters."),
    Command("run", "harness.commands.run_cmd", "Run the baseline and the chosen tricks under the same conditions and write a report."),
    Command(
        "resume", "harness.commands.resume_cmd",
        "Run what an interrupted 'run' left undone (from last.ckpt where one exists), then rebuild its report.",
    ),
    Command(
        "report", "harness.commands.report_cmd",
        "Re-render results.csv, report.md, report.html and plots/ of a run (a partial one too) "
        "from its results.jsonl and TensorBoard logs.",
    ),
    Command(
        "compare", "harness.commands.compare_cmd",
        "Compare two runs: throughput, peak memory and loss ratios (B/A) per matching row; --fail-above for CI.",
    ),
    Command(
        "parity", "harness.commands.parity_cmd",
        "The harness against a plain PyTorch loop: the baseline's throughput, and each trick's speed-up (fidelity).",
    ),
    Command(
        "predict", "harness.commands.predict_cmd",
        "Run a finished run's trained model (the checkpoint its test used, or --checkpoint) on its test set; save the outputs.",
    ),
    Command(
        "export", "harness.commands.export_cmd",
        "Export a finished run's trained model to ONNX or TorchScript and check the file against PyTorch (--atol).",
    ),
)
