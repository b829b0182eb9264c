"""A --max-steps budget that ends inside an epoch ends with a validation, so that tricks watching
val_loss during fit (early stopping, the checkpoints of the LR finder's run) work on short budgets."""

from __future__ import annotations

import pytest

from harness.worker import execute


def test_a_budget_inside_the_first_epoch_validates_at_its_end(make_spec) -> None:
    result = execute(make_spec(max_steps=10))  # digits: 18 batches an epoch
    assert result.status == "ok", result.reason
    assert result.optimizer_steps == 10 and [point["step"] for point in result.curve] == [10]


def test_a_budget_ending_inside_a_later_epoch_validates_at_each_epoch_end_and_at_its_end(make_spec) -> None:
    result = execute(make_spec(max_steps=27, max_epochs=5))
    assert result.status == "ok", result.reason
    assert [point["step"] for point in result.curve] == [18, 27]


@pytest.mark.parametrize("trick", ["early-stopping", "lr-finder"])
def test_tricks_that_watch_val_loss_run_on_a_budget_shorter_than_an_epoch(trick: str, make_spec) -> None:
    result = execute(make_spec([trick], max_steps=10))
    assert result.status == "ok", result.reason
    assert result.optimizer_steps == 10 and result.val_loss is not None
