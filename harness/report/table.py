"""Results -> pandas tables: one summary row per (workload, dataset, accelerator, trick) with ratios.

Ratios are taken against the baseline of the same workload, dataset and accelerator, so each cell
reads "this trick, against doing nothing, on this machine". With repeats, each number is the median
over repeats; the throughput's spread is the median of the per-run IQRs over blocks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pandas as pd

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


def summary_frame(results: Sequence[Result]) -> pd.DataFrame:
    """Aggregate repeats and add ``<metric>_ratio`` columns against each group's baseline."""
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
    out["precision"] = summary["precision"].fillna("")
    out["batch"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["batch_size"]]
    out["opt steps"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["optimizer_steps"]]
    out["note"] = summary["reason"].fillna("")
    return out
