"""Time-to-target on hand-made validation curves."""

from __future__ import annotations

import math

import pytest

from harness.report.target import default_targets, format_to_target, target_frame, time_to_target
from harness.spec import Result


def point(epoch: int, val_loss: float, fit_s: float, samples: int | None = None) -> dict:
    return {"epoch": epoch, "step": 10 * (epoch + 1), "samples": samples or 100 * (epoch + 1),
            "train_s": fit_s / 2, "fit_s": fit_s, "val_loss": val_loss}


CURVE = [point(0, 0.50, 1.0), point(1, 0.30, 2.0), point(2, 0.20, 3.0), point(3, 0.25, 4.0)]


def run(trick: str, curve: list[dict], tune_s: float = 0.0, repeat: int = 0, status: str = "ok",
        accelerator: str = "cpu", val_loss: float | None = None) -> Result:
    return Result(run_id=f"w-{accelerator}-{trick}-r{repeat}", trick=trick, workload="w", dataset="d",
                  accelerator=accelerator, repeat=repeat, status=status, tune_s=tune_s, curve=curve,
                  val_loss=val_loss if val_loss is not None else (curve[-1]["val_loss"] if curve else None))


def test_first_validation_at_or_below_target_counts_with_tuning_time_added() -> None:
    hit = time_to_target(CURVE, target=0.30, tune_s=0.5)
    assert hit is not None
    assert (hit.epoch, hit.samples, hit.val_loss) == (1, 200, 0.30)  # equal to the target counts
    assert hit.wall_s == pytest.approx(2.5)  # tune_s + fit_s at that validation


def test_the_first_crossing_wins_even_if_the_loss_goes_back_up() -> None:
    hit = time_to_target(CURVE, target=0.22)
    assert hit is not None and hit.epoch == 2 and hit.wall_s == pytest.approx(3.0)


def test_never_reached_is_none_and_displays_not_reached() -> None:
    assert time_to_target(CURVE, target=0.1) is None
    assert time_to_target([], target=1.0) is None
    assert format_to_target(math.inf, math.inf) == ("not reached", "not reached")
    assert format_to_target(float("nan"), float("nan")) == ("-", "-")
    assert format_to_target(2.5, 1200) == ("2.50", "1,200")


def test_nan_points_never_reach_and_points_are_taken_in_time_order() -> None:
    curve = [point(1, 0.1, 2.0), point(0, float("nan"), 1.0)]
    hit = time_to_target(curve, target=0.2)
    assert hit is not None and hit.wall_s == pytest.approx(2.0)


def test_default_target_is_the_baseline_final_val_loss_per_group_median_over_repeats() -> None:
    results = [
        run("baseline", [point(0, 0.4, 1.0), point(1, 0.2, 2.0)], repeat=0),
        run("baseline", [point(0, 0.4, 1.0), point(1, 0.3, 2.0)], repeat=1),
        run("baseline", [point(0, 0.4, 1.0), point(1, 0.1, 2.0)], repeat=2),
        run("baseline", [point(0, 0.9, 1.0)], accelerator="gpu"),
        run("baseline", [], status="failed", accelerator="tpu"),
        run("fast", [point(0, 0.05, 1.0)]),
    ]
    # keyed by device name too (harness.report.devices); these rows name none
    assert default_targets(results) == {("w", "d", "cpu", ""): pytest.approx(0.2), ("w", "d", "gpu", ""): pytest.approx(0.9)}


def test_target_frame_medians_over_repeats_counts_reached_and_honours_an_explicit_target() -> None:
    results = [
        run("baseline", [point(0, 0.4, 1.0), point(1, 0.2, 2.0)]),
        run("fast", [point(0, 0.15, 0.5)], tune_s=0.25, repeat=0),
        run("fast", [point(0, 0.25, 0.5), point(1, 0.18, 0.9)], tune_s=0.25, repeat=1),
        run("fast", [point(0, 0.19, 0.7)], tune_s=0.25, repeat=2),
        run("slow", [point(0, 0.5, 1.0), point(1, 0.3, 2.0)]),
        run("broken", [], status="failed"),
    ]
    frame = target_frame(results).set_index("trick")
    assert frame.loc["baseline", "target_val_loss"] == pytest.approx(0.2)
    assert frame.loc["baseline", "to_target_s"] == pytest.approx(2.0)
    assert frame.loc["fast", "to_target_s"] == pytest.approx(0.95)  # median of 0.75, 1.15, 0.95
    assert frame.loc["fast", "to_target_samples"] == 100  # median of 100, 200, 100
    assert frame.loc["fast", "to_target_reached"] == "3/3"
    assert math.isinf(frame.loc["slow", "to_target_s"]) and frame.loc["slow", "to_target_reached"] == "0/1"
    assert "broken" not in frame.index  # no ok run: nothing to time

    explicit = target_frame(results, target_val_loss=0.35).set_index("trick")
    assert explicit.loc["slow", "to_target_s"] == pytest.approx(2.0)
    assert (explicit["target_source"] == "--target-val-loss").all()


def test_without_a_baseline_there_is_no_default_target() -> None:
    frame = target_frame([run("fast", [point(0, 0.1, 1.0)])])
    assert math.isnan(frame.loc[0, "target_val_loss"]) and math.isnan(frame.loc[0, "to_target_s"])
