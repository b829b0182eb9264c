"""Results -> pandas tables: one summary row per (workload, dataset, accelerator, trick) with ratios.

Ratios are taken against the baseline of the same workload, dataset and accelerator, so each cell
reads "this trick, against doing nothing, on this machine". With repeats, each number is the median
over repeats; the throughput's spread is the median of the per-run IQRs over blocks. The summary
also carries each row's time to the target val loss (see ``harness.report.target``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import pandas as pd

from harness.report.target import format_to_target, target_frame
from harness.spec import BASELINE, Result

GROUP = ["workload", "dataset", "accelerator"]
# metric, column label, whether a ratio is shown
RATIO_METRICS = ["samples_per_s", "step_time_ms", "peak_mem_bytes", "val_loss", "test_loss", "wall_s"]
NUMERIC = [
    "samples_per_s", "samples_per_s_iqr", "step_time_ms", "peak_mem_bytes", "train_loss", "val_loss",
    "test_loss", "wall_s", "fit_s", "tune_s", "steps", "optimizer_steps", "epochs", "blocks_measured", "batch_size",
]


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """One row per run, every Result field a column; ``details`` as a JSON string (CSV-friendly)."""
    rows = []
    for result in results:
        row = dataclasses.asdict(result)
        row["details"] = json.dumps(row["details"], sort_keys=True)
        row["curve"] = json.dumps(row["curve"])
        rows.append(row)
    columns = [f.name for f in dataclasses.fields(Result)]
    return pd.DataFrame(rows, columns=columns)


def _status(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return ", ".join(f"{status} {count}/{len(statuses)}" for status, count in counts.items())


def summary_frame(results: Sequence[Result], target_val_loss: float | None = None) -> pd.DataFrame:
    """Aggregate repeats, add ``<metric>_ratio`` columns against each group's baseline and the
    time-to-target columns (target: ``target_val_loss``, else each group's baseline final val loss)."""
    frame = results_frame(results)
    if frame.empty:
        return frame
    ok = frame[frame["status"] == "ok"]
    keys = [*GROUP, "trick"]
    order = list(dict.fromkeys(frame["trick"]))  # first-seen order: baseline first, then as planned
    numeric = ok.groupby(keys, sort=False)[NUMERIC].median()
    noisy = ok.groupby(keys, sort=False)["noisy"].agg(lambda s: bool(s.fillna(False).any()))
    first = frame.groupby(keys, sort=False).agg(
        status=("status", _status),
        reason=("reason", lambda s: "; ".join(sorted({r for r in s if r}))),
        precision=("precision", "first"),
        device_name=("device_name", "first"),
        loader=("loader", "first"),
        mem_kind=("mem_kind", "first"),
        details=("details", "last"),
        repeats=("repeat", "count"),
    )
    summary = first.join(numeric).join(noisy.rename("noisy")).reset_index()
    summary["noisy"] = summary["noisy"].fillna(False).astype(bool)
    for metric in RATIO_METRICS:
        baseline = summary[summary["trick"] == BASELINE].set_index(GROUP)[metric]
        summary[f"{metric}_ratio"] = [
            row[metric] / baseline.get(tuple(row[g] for g in GROUP), float("nan"))
            if pd.notna(row[metric]) else float("nan")
            for _, row in summary.iterrows()
        ]
    summary = summary.merge(target_frame(results, target_val_loss), on=keys, how="left")
    summary["_order"] = summary["trick"].map({name: i for i, name in enumerate(order)})
    return summary.sort_values([*GROUP, "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _with_ratio(value: float, ratio: float, fmt: str) -> str:
    if pd.isna(value):
        return "-"
    text = format(value, fmt)
    return f"{text} ({ratio:.2f}x)" if pd.notna(ratio) else text


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Human-readable strings for one group's summary rows (Markdown and terminal)."""
    out = pd.DataFrame()
    out["trick"] = summary["trick"]
    out["status"] = summary["status"]
    out["samples/s"] = [
        _with_ratio(v, r, ",.0f") + (f" ±{iqr / v:.0%}" if pd.notna(iqr) and v else "") + (" noisy" if n else "")
        for v, r, iqr, n in zip(summary["samples_per_s"], summary["samples_per_s_ratio"], summary["samples_per_s_iqr"], summary["noisy"])
    ]
    out["ms/batch"] = [_with_ratio(v, r, ".2f") for v, r in zip(summary["step_time_ms"], summary["step_time_ms_ratio"])]
    out["peak mem MiB"] = [
        _with_ratio(v / 2**20, r, ",.0f") if pd.notna(v) else "-"
        for v, r in zip(summary["peak_mem_bytes"], summary["peak_mem_bytes_ratio"])
    ]
    out["train loss"] = [format(v, ".4f") if pd.notna(v) else "-" for v in summary["train_loss"]]
    out["val loss"] = [_with_ratio(v, r, ".4f") for v, r in zip(summary["val_loss"], summary["val_loss_ratio"])]
    out["test loss"] = [_with_ratio(v, r, ".4f") for v, r in zip(summary["test_loss"], summary["test_loss_ratio"])]
    out["wall s"] = [_with_ratio(v, r, ".1f") for v, r in zip(summary["wall_s"], summary["wall_s_ratio"])]
    to_target = [format_to_target(s, n) for s, n in zip(summary["to_target_s"], summary["to_target_samples"])]
    out["to target s"] = [s for s, _ in to_target]
    out["to target samples"] = [n for _, n in to_target]
    out["precision"] = summary["precision"].fillna("")
    out["batch"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["batch_size"]]
    out["opt steps"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["optimizer_steps"]]
    out["note"] = summary["reason"].fillna("")
    return out


# display column -> (summary column, which end is best); the cells best/worst marks apply to
BEST_IS = {
    "samples/s": ("samples_per_s", "max"),
    "ms/batch": ("step_time_ms", "min"),
    "peak mem MiB": ("peak_mem_bytes", "min"),
    "train loss": ("train_loss", "min"),
    "val loss": ("val_loss", "min"),
    "test loss": ("test_loss", "min"),
    "wall s": ("wall_s", "min"),
    "to target s": ("to_target_s", "min"),
    "to target samples": ("to_target_samples", "min"),
}
NOISY_COLUMNS = ("samples/s", "ms/batch")  # both come from the same timing blocks
MARK_TOLERANCE = 0.01  # values within 1% count as tied: 855 vs 856 MiB is no best and worst


def _close(values: pd.Series, target: float) -> pd.Series:
    if math.isinf(target):
        return values == target
    return (values - target).abs() <= MARK_TOLERANCE * abs(target)


def cell_marks(summary: pd.DataFrame) -> pd.DataFrame:
    """For one group's summary rows: "best", "worst" or "" per display cell, "noisy" added where flagged.

    Best and worst are taken per column over the rows that have a value; values within 1% of the
    best (worst) share its mark, and a column whose best and worst are within 1% of each other has
    no mark (nothing to choose). "not reached" (infinite time to target) is the worst there is.
    Indexed and labelled like ``display_table(summary)``; a cell can read "best noisy".
    """
    table = display_table(summary)
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    for column, (metric, sense) in BEST_IS.items():
        values = pd.to_numeric(summary[metric], errors="coerce").astype(float).set_axis(table.index)
        present = values.dropna()
        if len(present) < 2:
            continue
        best, worst = (present.max(), present.min()) if sense == "max" else (present.min(), present.max())
        if math.isinf(best) or (not math.isinf(worst) and abs(worst - best) <= MARK_TOLERANCE * abs(best)):
            continue  # all "not reached", or nothing to choose between
        marks.loc[_close(values, worst), column] = "worst"
        marks.loc[_close(values, best), column] = "best"
    noisy = summary["noisy"].fillna(False).astype(bool).set_axis(table.index)
    for column in NOISY_COLUMNS:
        marks.loc[noisy, column] = (marks.loc[noisy, column] + " noisy").str.strip()
    return marks
