"""Results -> pandas tables: one summary row per (workload, dataset, accelerator, trick) with ratios.

Ratios are taken against the baseline of the same workload, dataset and accelerator, so each cell
reads "this trick, against doing nothing, on this machine". With repeats, each number is the median
over repeats, except throughput: its median and IQR are taken over the timing blocks of all repeats
pooled, so that a cell is flagged noisy (IQR/median > 10%) whether blocks or repeats disagree. Where
a run was measured on both CPU and GPU, GPU rows carry their GPU/CPU speed ratio. The summary also
carries each row's time to the target val loss (see ``harness.report.target``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Sequence

import pandas as pd

from harness.measure import NOISY_IQR_RATIO, iqr
from harness.report.target import format_to_target, target_frame
from harness.spec import BASELINE, Result

GROUP = ["workload", "dataset", "accelerator"]
# metric, column label, whether a ratio is shown
RATIO_METRICS = ["samples_per_s", "step_time_ms", "peak_mem_bytes", "val_loss", "test_loss", "wall_s"]
NUMERIC = [
    "samples_per_s", "samples_per_s_iqr", "step_time_ms", "peak_mem_bytes", "train_loss", "val_loss",
    "test_loss", "wall_s", "fit_s", "tune_s", "steps", "optimizer_steps", "epochs", "blocks_measured", "batch_size",
    "flops_per_sample", "flops_per_s", "mfu",
]


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """One row per run, every Result field a column; ``details`` as a JSON string (CSV-friendly)."""
    rows = []
    for result in results:
        row = dataclasses.asdict(result)
        row["details"] = json.dumps(row["details"], sort_keys=True)
        row["curve"] = json.dumps(row["curve"])
        row["block_samples_per_s"] = json.dumps(row["block_samples_per_s"])
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
    order = [BASELINE, *sorted(set(frame["trick"]) - {BASELINE})]  # runs are shuffled (plan.py): a stable order
    numeric = ok.groupby(keys, sort=False)[NUMERIC].median()
    noisy = ok.groupby(keys, sort=False)["noisy"].agg(lambda s: bool(s.fillna(False).any()))
    first = frame.groupby(keys, sort=False).agg(
        status=("status", _status),
        reason=("reason", lambda s: "; ".join(sorted({r for r in s if r}))),
        precision=("precision", "first"),
        device_name=("device_name", "first"),
        loader=("loader", "first"),
        mem_kind=("mem_kind", "first"),
        world_size=("world_size", "max"),
        strategy=("strategy", lambda s: next((x for x in s if x), "")),
        details=("details", "last"),
        repeats=("repeat", "count"),
    )
    summary = first.join(numeric).join(noisy.rename("noisy")).reset_index()
    summary["noisy"] = summary["noisy"].fillna(False).astype(bool)
    _pool_blocks(summary, [r for r in results if r.status == "ok"])
    summary["gpu_cpu_speed"] = _gpu_cpu_speed(summary)
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


def _pool_blocks(summary: pd.DataFrame, ok: Sequence[Result]) -> None:
    """Median and IQR of samples/s over the blocks of every repeat of a cell, and its noisy flag."""
    pooled: dict[tuple[str, ...], list[float]] = {}
    for result in ok:
        key = (result.workload, result.dataset, result.accelerator, result.trick)
        pooled.setdefault(key, []).extend(result.block_samples_per_s)
    for index, row in summary.iterrows():
        rates = pooled.get((row["workload"], row["dataset"], row["accelerator"], row["trick"]))
        if not rates:
            continue  # results from before blocks were kept: the per-run medians stand
        median = statistics.median(rates)
        spread = iqr(rates)
        summary.at[index, "samples_per_s"] = median
        summary.at[index, "samples_per_s_iqr"] = spread
        summary.at[index, "noisy"] = bool(median > 0 and spread / median > NOISY_IQR_RATIO)


def _gpu_cpu_speed(summary: pd.DataFrame) -> list[float]:
    """samples/s on GPU over samples/s on CPU for the same workload, dataset and trick (GPU rows only)."""
    speed = summary.set_index(["workload", "dataset", "accelerator", "trick"])["samples_per_s"]
    ratios = []
    for _, row in summary.iterrows():
        cpu = speed.get((row["workload"], row["dataset"], "cpu", row["trick"]))
        ok = row["accelerator"] == "gpu" and cpu is not None and pd.notna(cpu) and cpu > 0
        ratios.append(row["samples_per_s"] / cpu if ok else float("nan"))
    return ratios


def _flops(value: float) -> str:
    if pd.isna(value):
        return "-"
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1.0, "")):
        if value >= scale or scale == 1.0:
            x = value / scale
            return (f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}") + f" {unit}".rstrip()
    raise AssertionError("unreachable")


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
    out["FLOP/s"] = [_flops(v) for v in summary["flops_per_s"]]
    if summary["mfu"].notna().any():
        out["MFU"] = [f"{v:.1%}" if pd.notna(v) else "-" for v in summary["mfu"]]
    if summary["gpu_cpu_speed"].notna().any():
        out["GPU/CPU"] = [f"{v:.1f}x" if pd.notna(v) else "-" for v in summary["gpu_cpu_speed"]]
    if (summary["repeats"] > 1).any():
        out["runs"] = summary["repeats"].astype(str)
    out["precision"] = summary["precision"].fillna("")
    out["batch"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["batch_size"]]
    out["opt steps"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["optimizer_steps"]]
    out["note"] = [_note(reason, details) for reason, details in zip(summary["reason"], summary["details"])]
    return out


def _note(reason: object, details: object) -> str:
    """A skipped or failed row's reason, else the warnings its tricks recorded (and a resume, which
    makes the row's time and samples start at the checkpoint)."""
    if isinstance(reason, str) and reason:
        return reason
    try:
        parsed = json.loads(details) if isinstance(details, str) else {}
    except json.JSONDecodeError:
        parsed = {}
    notes = [f"warning: {w}" for w in parsed.get("warnings", [])]
    if parsed.get("resumed_from"):
        notes.insert(0, f"resumed from {parsed['resumed_from']}: times, samples and curve count from there")
    return "; ".join(notes)


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
    "MFU": ("mfu", "max"),
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
