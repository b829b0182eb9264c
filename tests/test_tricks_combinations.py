"""Tricks run together as one row; refused combinations stop before any run, warned ones say why."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.runfolder.plan import check_trick_runs
from harness.worker import execute


class BatchSizes(pl.Callback):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.sizes.append(len(batch[0]))


def test_same_effective_batch_mode_divides_the_micro_batch(make_spec) -> None:
    probe = BatchSizes()
    params = {"grad-accumulation": {"k": "4", "mode": "same-effective-batch"}}
    result = execute(make_spec(["grad-accumulation"], max_epochs=1, trick_params=params), extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    assert result.details["micro_batch_size"] == result.batch_size == 16
    assert result.details["effective_batch_size"] == 64  # the baseline's batch per optimizer step
    assert set(probe.sizes[:-1]) == {16} and result.steps == 72  # 1150 / 16 -> 72 batches
    assert result.optimizer_steps == 72 // 4


def test_bf16_mixed_with_grad_clipping_is_one_row_with_both(make_spec) -> None:
    result = execute(make_spec(["bf16-mixed", "grad-clipping"], max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.trick == "bf16-mixed+grad-clipping" and result.precision == "bf16-mixed"
    assert result.details["gradient_clip_val"] == 1.0 and "warnings" not in result.details


def test_finders_tune_batch_size_first_whatever_the_order_written(make_spec) -> None:
    params = {"batch-size-finder": {"init_val": "64", "max_val": "128"}}
    result = execute(make_spec(["lr-finder", "batch-size-finder"], max_epochs=1, trick_params=params))
    assert result.status == "ok", result.reason
    details = result.details
    assert details["applied_batch_size"] == 115 == result.batch_size
    assert details["lr_find_batch_size"] == 115  # the LR was searched at the batch size training used
    assert result.tune_s >= details["lr_find_s"] + details["batch_size_find_s"]


@pytest.mark.parametrize(
    ("runs", "params", "message"),
    [
        (
            [["batch-size-finder", "grad-accumulation"]],
            {"grad-accumulation": {"mode": "same-effective-batch"}},
            "cannot run 'batch-size-finder+grad-accumulation': batch-size-finder sets the micro-batch",
        ),
        ([["16-mixed", "bf16-true"]], {}, "cannot run '16-mixed+bf16-true': 16-mixed and bf16-true both set Trainer(precision=...)"),
    ],
)
def test_refused_combinations_raise_a_user_error_naming_them(runs, params, message) -> None:
    with pytest.raises(UserError) as error:
        check_trick_runs(runs, params)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_accumulation_in_its_default_mode_goes_with_the_batch_size_finder(make_spec) -> None:
    assert check_trick_runs([["batch-size-finder", "grad-accumulation"]], {}) == {}
    params = {"batch-size-finder": {"init_val": "64", "max_val": "128"}, "grad-accumulation": {"k": "2"}}
    result = execute(make_spec(["grad-accumulation", "batch-size-finder"], max_epochs=1, trick_params=params))
    assert result.status == "ok", result.reason
    # recorded after the finder: the micro-batch is the size it applied, the effective batch k times that
    assert result.details["micro_batch_size"] == result.details["applied_batch_size"] == 115
    assert result.details["effective_batch_size"] == 230


def test_cli_refuses_before_any_run(tmp_path: Path, capsys) -> None:
    code = main([
        "run", "--tricks", "batch-size-finder+grad-accumulation", "--param", "grad-accumulation.mode=same-effective-batch",
        "--accelerator", "cpu", "--dataset", "digits", "--out", str(tmp_path), "--quiet",
    ])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("harness: error: cannot run 'batch-size-finder+grad-accumulation':")
    assert not list(tmp_path.rglob("results.jsonl")) and not list(tmp_path.rglob("*.log"))


def test_swa_with_early_stopping_warns_and_records_when_the_average_was_lost(make_spec) -> None:
    assert list(check_trick_runs([["swa", "early-stopping"]], {})) == ["swa+early-stopping"]
    # A plateau (lr=0) makes early stopping end the fit at epoch 4, before SWA starts at epoch 8.
    params = {"early-stopping": {"patience": "3"}}
    result = execute(make_spec(["swa", "early-stopping"], lr=0.0, max_epochs=1, trick_params=params))
    assert result.status == "ok", result.reason
    details = result.details
    assert details["budget_epochs"] == 10 and details["epochs_run"] == 4 and details["stopped_early"]
    assert details["weights_averaged"] is False and details["swa_snapshots"] == 0
    warnings = details["warnings"]
    assert any("early stopping may end the fit before SWA" in w for w in warnings)
    assert any("Lightning kept the last weights, not the average" in w for w in warnings)
