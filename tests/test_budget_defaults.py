"""The main job's defaults: --max-epochs auto, --block-steps auto and the estimate printed before the first run.

The verdicts need a measured window of about 10 kept blocks and 1 s (harness.report.verdicts); these
defaults are what make a default invocation reach it, so they are tested as behaviour, not as numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from harness.commands import run_cmd
from harness.commands.options import run_options
from harness.measuring.estimate import CPU_EXTRA_S, estimate_seconds, estimate_text, run_seconds
from harness.measuring.measure import AUTO_BLOCK_STEPS, auto_block_steps
from harness.runfolder.plan import AUTO_EPOCHS, RunOptions, epochs_for, parse_tricks, plan_runs
from harness.testing import tiny_spec
from harness.worker import execute
from harness.workload import WORKLOADS


def options_for(tmp_path: Path, *argv: str) -> tuple[argparse.Namespace, RunOptions]:
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path / "data"), *argv])
    return args, run_options(args)


def test_auto_epochs_follow_the_workloads_sample_budget_and_its_own_data(tmp_path: Path) -> None:
    _, digits = options_for(tmp_path, "--dataset", "digits")
    _, synthetic = options_for(tmp_path, "--dataset", "synthetic", "--synthetic-size", "100000")
    autoencoder = WORKLOADS.get("autoencoder")
    per_epoch = autoencoder().train_samples("digits", 0)
    assert epochs_for("autoencoder", digits) * per_epoch >= autoencoder.auto_train_samples
    assert (epochs_for("autoencoder", digits) - 1) * per_epoch < autoencoder.auto_train_samples
    assert epochs_for("autoencoder", synthetic) == AUTO_EPOCHS  # a large dataset: never under AUTO_EPOCHS
    assert epochs_for("pkg.mod:Module", digits) == AUTO_EPOCHS
    # the transformer brings its own tokens: its epoch is its sequences, whatever --dataset says
    transformer = WORKLOADS.get("transformer").from_params({"sequences": "200"})
    assert transformer.train_samples("digits", 0) == 200 - 2 * 20
    explicit = dataclasses.replace(digits, max_epochs=5)
    assert epochs_for("autoencoder", explicit) == 5


@pytest.mark.parametrize(("planned", "expected"), [(30, 2), (54, 2), (60, 3), (199, 9), (200, 10), (1188, 10), (float("inf"), 10)])
def test_auto_block_steps_aim_at_20_blocks_of_2_to_10_batches(planned: float, expected: int) -> None:
    assert auto_block_steps(planned) == expected
    assert AUTO_BLOCK_STEPS[0] <= auto_block_steps(planned) <= AUTO_BLOCK_STEPS[1]


def test_a_short_budget_with_auto_blocks_keeps_enough_blocks_for_a_verdict(tmp_path: Path) -> None:
    """3 epochs of 18 batches: fixed blocks of 10 keep 4 (no speed verdict); auto blocks keep ~25."""
    fixed = execute(tiny_spec(tmp_path / "fixed", max_epochs=3, block_steps=10, checkpoints=False))
    auto = execute(tiny_spec(tmp_path / "auto", max_epochs=3, block_steps=0, checkpoints=False))
    assert fixed.status == auto.status == "ok"
    assert fixed.blocks_measured is not None and fixed.blocks_measured < 10
    assert "block_steps" not in fixed.details  # only an auto size is recorded
    assert auto.details["block_steps"] == auto_block_steps(3 * 18) == 2
    assert auto.blocks_measured is not None and auto.blocks_measured >= 20


def test_the_estimate_adds_what_a_trick_costs_and_only_where_a_reference_exists(tmp_path: Path) -> None:
    args, options = options_for(tmp_path, "--dataset", "digits", "--accelerator", "cpu")
    specs = plan_runs(parse_tricks("compile"), ["autoencoder"], ["cpu"], 1, options, {}, str(tmp_path), {})
    baseline, compiled = sorted(specs, key=lambda spec: spec.label == "compile")
    samples = WORKLOADS.get("autoencoder")().train_samples("digits", 0)
    assert run_seconds(compiled, samples) == pytest.approx(run_seconds(baseline, samples) + CPU_EXTRA_S["compile"]["autoencoder"])
    longer = dataclasses.replace(baseline, max_epochs=2 * baseline.max_epochs)
    assert run_seconds(longer, samples) > run_seconds(baseline, samples)
    total = estimate_seconds(specs)
    assert total is not None and total > run_seconds(baseline, samples) + run_seconds(compiled, samples)
    assert "about" in estimate_text(specs)
    # no reference pace for a GPU or an imported module: it says so instead of guessing
    assert estimate_seconds([dataclasses.replace(baseline, accelerator="gpu")]) is None
    assert estimate_seconds([dataclasses.replace(baseline, workload="pkg.mod:Module")]) is None
    assert estimate_text([dataclasses.replace(baseline, accelerator="gpu")]).startswith("no estimate before the first run")
