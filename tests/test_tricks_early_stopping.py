"""Early stopping stops a plateaued run before its budget, never before min_epochs, and says so."""

from __future__ import annotations

from harness.worker import execute

# lr=0: the weights never move, so val_loss is exactly the same every epoch: a perfect plateau.
PLATEAU = dict(lr=0.0, max_epochs=2)


def test_plateau_stops_before_the_budget(make_spec) -> None:
    spec = make_spec(["early-stopping"], trick_params={"early-stopping": {"patience": "2"}}, **PLATEAU)
    result = execute(spec)
    assert result.status == "ok", result.reason
    details = result.details
    assert details["budget_epochs"] == 6 and details["baseline_epochs"] == 2  # 3x the run's 2 epochs
    # best at epoch 1, no improvement at epochs 2 and 3: patience 2 is spent after 3 epochs
    assert details["epochs_run"] == result.epochs == 3
    assert details["stopped_early"] is True
    assert "did not improve in the last 2 records" in details["stopped_reason"]
    assert details["best_val_loss"] == result.val_loss
    assert details["saved_s_vs_budget"] > 0 and details["extra_s_vs_baseline"] > 0


def test_never_stops_before_min_epochs(make_spec) -> None:
    params = {"early-stopping": {"patience": "1", "min_epochs": "5"}}
    result = execute(make_spec(["early-stopping"], trick_params=params, **PLATEAU))
    assert result.status == "ok", result.reason
    # patience 1 would stop after epoch 2; the floor holds it to 5 of the 6-epoch budget
    assert result.details["epochs_run"] == result.epochs == 5
    assert result.details["stopped_early"] is True


def test_an_improving_run_uses_the_whole_budget(make_spec) -> None:
    result = execute(make_spec(["early-stopping"], max_epochs=1, trick_params={"early-stopping": {"budget_factor": "2"}}))
    assert result.status == "ok", result.reason
    details = result.details
    assert details["epochs_run"] == details["budget_epochs"] == 2
    assert details["stopped_early"] is False and details["stopped_reason"] == "ran the whole budget of 2 epochs"
    assert details["saved_s_vs_budget"] == 0
