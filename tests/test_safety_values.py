"""Values that cannot work are refused before any run; budgets that train or measure nothing are failed rows.

Every refusal is one line on stderr and exit code 2, naming the bad value (and what is valid); a run
whose budget trained nothing, or measured no timing block, says so in its row instead of an "ok" row
with empty cells.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.worker import execute


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--lr", "inf"], "'inf' is not a finite number"),
        (["--lr", "nan"], "'nan' is not a finite number"),
        (["--timeout", "inf"], "'inf' is not a finite number"),
        (["--seed", "-1"], "-1 is not in 0..4294967295"),
        (["--seed", str(2**32)], "is not in 0..4294967295"),
        (["--tricks", "early-stopping", "-p", "early-stopping.min_delta=nan"], "min_delta='nan' is not a finite number"),
        (["--tricks", "early-stopping", "-p", "early-stopping.budget_factor=inf"], "budget_factor='inf' is not a finite number"),
        (["--tricks", "grad-clipping", "-p", "grad-clipping.value=-inf"], "value='-inf' is not a finite number"),
    ],
)
def test_values_that_cannot_work_are_one_line_and_exit_2(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["run", *argv, "--dataset", "digits", "--out", str(tmp_path)])
    except SystemExit as exited:  # argparse's type checks exit from the parser
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not list(tmp_path.iterdir())  # refused before any run folder exists


def test_init_args_the_constructor_does_not_take_are_refused_with_what_it_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "own_models.py").write_text(textwrap.dedent(
        """
        import lightning.pytorch as pl

        class Net(pl.LightningModule):
            def __init__(self, hidden: int = 4, lr: float = 0.01):
                super().__init__()

        class Data(pl.LightningDataModule):
            def __init__(self, batch_size: int = 8):
                super().__init__()
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["run", "--workload", "own_models:Net", "--datamodule", "own_models:Data", "--accelerator", "cpu", "--out", str(tmp_path / "out")]
    assert main([*common, "--init-args", '{"hiden": 8}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not take 'hiden'" in err[0] and "it takes: hidden, lr" in err[0], err
    assert main([*common, "--datamodule-args", '{"batch": 8}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "own_models:Data does not take 'batch'" in err[0] and "batch_size" in err[0], err


def test_a_training_set_smaller_than_one_batch_is_a_failed_row_not_an_empty_ok_one(make_spec) -> None:
    result = execute(make_spec(dataset="synthetic", synthetic_size=1, max_epochs=1))
    assert result.status == "failed" and result.reason.startswith("trained nothing: 0 training batches ran"), result.reason


def test_a_budget_without_one_timing_block_is_a_failed_row_that_keeps_what_it_trained(make_spec) -> None:
    result = execute(make_spec(max_epochs=1, block_steps=500))
    assert result.status == "failed" and result.reason.startswith("measured nothing"), result.reason
    assert "--block-steps 500" in result.reason
    assert result.steps == 18 and result.train_loss is not None  # what it did train stays in the row


def test_a_batch_larger_than_the_dataset_records_the_batch_the_run_had(make_spec) -> None:
    result = execute(make_spec(dataset="synthetic", synthetic_size=40, batch_size=64, block_steps=1, warmup_blocks=0, max_epochs=3))
    assert result.status == "ok", result.reason
    assert result.batch_size == 25 and result.details["batch_size_requested"] == 64  # 40 samples: 25 train after the splits
