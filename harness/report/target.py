"""Time-to-target: how much wall time and how many samples a run needed to reach a val loss.

A trick that makes steps faster but learning slower can lose on the only clock that matters, the
one that stops when the model is good enough. The target defaults to the baseline's final val loss
(of the same workload, dataset and accelerator), so the question each row answers is "when did this
run first become as good as doing nothing special for the whole budget?".

Definition (the report prints it): the wall time to target is ``tune_s + fit_s`` at the first
validation during fit whose val loss is <= the target, where ``fit_s`` is the time since ``fit``
started (training, validation and epoch ends included) and ``tune_s`` the tuning phase before it
(LR and batch size finders), which is part of the cost. The samples to target are the training
samples seen at that validation. A run whose val loss never reached the target is "not reached".
Validation happens once per epoch, so both numbers have epoch resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.report.devices import with_devices
from harness.spec import BASELINE, Result

GROUP = ("workload", "dataset", "accelerator", "device_name")  # the same device only (harness.report.devices)
KEYS = [*GROUP, "trick"]
DEFINITION = (
    "Time to target: `tune s + fit s` at the first validation during fit whose val loss is <= the target "
    "(fit s counts from the start of `fit`, validation included; tune s is the LR/batch-size finders before it), "
    "and the training samples seen by then. Validation runs once per epoch, so both have epoch resolution. "
    "`not reached`: the run's val loss never got to the target. With repeats, the median over repeats "
    "(a repeat that did not reach counts as infinitely late)."
)


@dataclass(frozen=True)
class TargetHit:
    """The first validation point at or below the target."""

    wall_s: float  # tune_s + fit_s at that validation
    samples: int
    epoch: int
    step: int
    val_loss: float


def time_to_target(
    curve: Sequence[Mapping[str, Any]], target: float, tune_s: float = 0.0, monitor: str = "val_loss"
) -> TargetHit | None:
    """The first point of ``curve`` with ``monitor <= target``, or None when there is none.

    Points are taken in the order of their ``fit_s`` (the order they were recorded); points without
    a finite value are skipped, so a NaN validation never counts as reaching the target.
    """
    if target is None or not math.isfinite(target):
        return None
    for point in sorted(curve, key=lambda p: p.get("fit_s", 0.0)):
        value = point.get(monitor)
        if value is None or not math.isfinite(float(value)):
            continue
        if float(value) <= target:
            return TargetHit(
                wall_s=float(tune_s or 0.0) + float(point.get("fit_s", 0.0)),
                samples=int(point.get("samples", 0)),
                epoch=int(point.get("epoch", -1)),
                step=int(point.get("step", -1)),
                val_loss=float(value),
            )
    return None


def final_val_loss(result: Result) -> float | None:
    """The val loss at the end of fit: the curve's last point (the loss the target rule compares),
    else the final ``Trainer.validate`` value."""
    for point in reversed(result.curve):
        value = point.get("val_loss")
        if value is not None and math.isfinite(float(value)):
            return float(value)
    if result.val_loss is not None and math.isfinite(result.val_loss):
        return float(result.val_loss)
    return None


def default_targets(results: Iterable[Result]) -> dict[tuple[str, str, str, str], float]:
    """Per (workload, dataset, accelerator, device name): the baseline's final val loss, median over repeats."""
    losses: dict[tuple[str, str, str, str], list[float]] = {}
    for result in with_devices(results):
        if result.trick != BASELINE or result.status != "ok":
            continue
        value = final_val_loss(result)
        if value is not None:
            losses.setdefault((result.workload, result.dataset, result.accelerator, result.device_name), []).append(value)
    return {key: float(pd.Series(values).median()) for key, values in losses.items()}


def target_frame(results: Iterable[Result], target_val_loss: float | None = None) -> pd.DataFrame:
    """One row per (workload, dataset, accelerator, device name, trick): the target and the median time to it.

    Columns: ``target_val_loss``, ``target_source`` ("baseline" or "--target-val-loss"),
    ``to_target_s`` and ``to_target_samples`` (inf: not reached; NaN: no ok run or no target) and
    ``to_target_reached`` ("k/n" repeats that reached it).
    """
    results = with_devices(results)
    targets = default_targets(results)
    rows = []
    for result in results:
        if result.status != "ok":
            continue
        key = (result.workload, result.dataset, result.accelerator, result.device_name)
        target = target_val_loss if target_val_loss is not None else targets.get(key)
        hit = time_to_target(result.curve, target, result.tune_s) if target is not None else None
        rows.append({
            "workload": result.workload, "dataset": result.dataset, "accelerator": result.accelerator,
            "device_name": result.device_name, "trick": result.trick,
            "target_val_loss": float("nan") if target is None else target,
            "target_source": "--target-val-loss" if target_val_loss is not None else "baseline",
            "to_target_s": float("nan") if target is None else (hit.wall_s if hit else math.inf),
            "to_target_samples": float("nan") if target is None else (hit.samples if hit else math.inf),
            "reached": hit is not None,
        })
    columns = [*KEYS, "target_val_loss", "target_source", "to_target_s", "to_target_samples", "to_target_reached"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(KEYS, sort=False)
    out = grouped.agg(
        target_val_loss=("target_val_loss", "first"),
        target_source=("target_source", "first"),
        to_target_s=("to_target_s", "median"),
        to_target_samples=("to_target_samples", "median"),
    )
    out["to_target_reached"] = grouped["reached"].agg(lambda s: f"{int(s.sum())}/{len(s)}")
    return out.reset_index()[columns]


def format_to_target(seconds: float, samples: float) -> tuple[str, str]:
    """Display strings for the two time-to-target cells."""
    if pd.isna(seconds):
        return "-", "-"
    if math.isinf(seconds):
        return "not reached", "not reached"
    return f"{seconds:.2f}", f"{samples:,.0f}"
