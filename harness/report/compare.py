"""Compare two runs row by row: the ratios B/A of throughput, peak memory and losses.

Run A is the reference (say, main's last CI run) and B the candidate. Rows match on (workload,
dataset, accelerator, device name, trick): a row is never compared with one measured on another
device (harness.report.devices), it is listed as only in A and only in B instead; and each side is its run's summary (the median over repeats). A
regression is a throughput that drops, or a peak memory that grows, by more than the threshold
*and* whose 95% interval says so (lies wholly below, or above, 1.00; the interval comes from the
spread between each side's repeats, ``verdicts.between_runs_interval``); a row with nothing to
build an interval from (one value per side) is judged on the threshold alone, as before. Rows whose
runs carried contention warnings say so. Rows present in only one run are listed, never dropped,
and rows that ran in one run and not in the other (skipped, failed) are shown with both statuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from harness.errors import UserError
from harness.report.devices import with_devices
from harness.report.table import summary_frame
from harness.report.verdicts import between_runs_interval, contended
from harness.spec import Result

KEYS = ["workload", "dataset", "accelerator", "device_name", "trick"]
# summary column, label, display format
METRICS = [
    ("samples_per_s", "samples/s", ",.0f"),
    ("peak_mem_bytes", "peak mem MiB", ",.0f"),
    ("train_loss", "train loss", ".4f"),
    ("val_loss", "val loss", ".4f"),
    ("test_loss", "test loss", ".4f"),
]


@dataclass
class Regression:
    row: tuple[str, str, str, str, str]
    what: str  # "throughput" or "peak memory"
    change: float  # relative change B/A - 1
    low: float = math.nan  # 95% interval of B/A (NaN: none could be built)
    high: float = math.nan
    contention: str = ""  # "A", "B" or "A and B": whose rows carried contention warnings

    def __str__(self) -> str:
        workload, dataset, accelerator, device, trick = self.row
        verb = "dropped" if self.change < 0 else "grew"
        text = f"{trick} ({workload}, {dataset}, {_where(accelerator, device)}): {self.what} {verb} {abs(self.change):.1%}"
        if not math.isnan(self.low):
            text += f" (B/A 95% CI {self.low:.2f}-{self.high:.2f})"
        else:
            text += " (no interval: one value per side)"
        if self.contention:
            text += f"; {self.contention}'s rows carried contention warnings: the timings are not the runs' alone"
        return text


@dataclass
class Comparison:
    matched: pd.DataFrame  # KEYS, status_a/b, noisy_a/b, <metric>_a, <metric>_b, <metric>_ratio
    only_a: pd.DataFrame  # KEYS + status
    only_b: pd.DataFrame
    regressions: list[Regression] = field(default_factory=list)


def _where(accelerator: str, device: str) -> str:
    return f"{accelerator} ({device})" if device else accelerator


def parse_threshold(text: str) -> float:
    """'10%' or '0.1' -> 0.1. A bare number must be a fraction in (0, 1]; a percentage any value > 0."""
    raw = text.strip()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%", raw)
    try:
        value = float(match.group(1)) / 100 if match else float(raw)
    except ValueError:
        raise UserError(f"--fail-above {text!r} is not a threshold; write a percentage like 10% or a fraction like 0.1") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--fail-above {text!r} must be greater than 0; write a percentage like 10% or a fraction like 0.1")
    if not match and value > 1:
        raise UserError(f"--fail-above {text!r} is ambiguous as a fraction above 1; write {value:g}% or {value / 100:g}")
    return value


def compare_results(results_a: Sequence[Result], results_b: Sequence[Result], threshold: float | None = None) -> Comparison:
    """Match the two runs' summary rows and compute B/A ratios; find regressions beyond ``threshold``."""
    results_a, results_b = with_devices(results_a), with_devices(results_b)
    a, b = _side(results_a), _side(results_b)
    merged = a.merge(b, on=KEYS, how="outer", suffixes=("_a", "_b"), indicator=True)
    # the runs' own row order (baseline first, tricks as planned): A's rows, then those only in B
    order = {key: i for i, key in enumerate(dict.fromkeys(_keys(a) + _keys(b)))}
    merged["_order"] = [order[key] for key in _keys(merged)]
    merged = merged.sort_values("_order", kind="stable").drop(columns="_order")
    only_a = merged.loc[merged["_merge"] == "left_only", [*KEYS, "status_a"]].rename(columns={"status_a": "status"})
    only_b = merged.loc[merged["_merge"] == "right_only", [*KEYS, "status_b"]].rename(columns={"status_b": "status"})
    matched = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    for metric, _, _ in METRICS:
        matched[f"{metric}_ratio"] = matched[f"{metric}_b"] / matched[f"{metric}_a"]
    _add_intervals(matched, results_a, results_b)
    comparison = Comparison(matched, only_a.reset_index(drop=True), only_b.reset_index(drop=True))
    if threshold is not None:
        comparison.regressions = find_regressions(matched, threshold)
    return comparison


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return list(zip(*(frame[k] for k in KEYS)))


def _runs(results: Sequence[Result]) -> dict[tuple, list[Result]]:
    out: dict[tuple, list[Result]] = {}
    for result in results:
        if result.status == "ok":
            out.setdefault(tuple(getattr(result, k) for k in KEYS), []).append(result)
    return out


def _add_intervals(matched: pd.DataFrame, results_a: Sequence[Result], results_b: Sequence[Result]) -> None:
    """Per matched row: B/A 95% intervals of throughput and peak memory, and which side's rows were contended."""
    runs_a, runs_b = _runs(results_a), _runs(results_b)
    columns: dict[str, list] = {name: [] for name in (
        "samples_per_s_low", "samples_per_s_high", "peak_mem_bytes_low", "peak_mem_bytes_high", "contention")}
    for key in _keys(matched):
        a, b = runs_a.get(key, []), runs_b.get(key, [])
        speed = between_runs_interval(
            [r.block_samples_per_s or ([r.samples_per_s] if r.samples_per_s else []) for r in a],
            [r.block_samples_per_s or ([r.samples_per_s] if r.samples_per_s else []) for r in b])
        memory = between_runs_interval([[r.peak_mem_bytes] for r in a if r.peak_mem_bytes],
                                       [[r.peak_mem_bytes] for r in b if r.peak_mem_bytes])
        for name, interval in (("samples_per_s", speed), ("peak_mem_bytes", memory)):
            columns[f"{name}_low"].append(interval.low if interval else math.nan)
            columns[f"{name}_high"].append(interval.high if interval else math.nan)
        sides = [side for side, runs in (("A", a), ("B", b)) if any(contended(r) for r in runs)]
        columns["contention"].append(" and ".join(sides))
    for name, values in columns.items():
        matched[name] = values


def _side(results: Sequence[Result]) -> pd.DataFrame:
    columns = [*KEYS, "status", "noisy", *(metric for metric, _, _ in METRICS)]
    summary = summary_frame(results)
    if summary.empty:
        return pd.DataFrame(columns=columns)
    return summary[columns]


def find_regressions(matched: pd.DataFrame, threshold: float) -> list[Regression]:
    """Throughput ratio below 1 - threshold, or peak memory ratio above 1 + threshold, whose 95% interval
    (when there is one) lies wholly below (above) 1: a change past the threshold that the repeats'
    spread could explain is not flagged."""
    found = []
    for _, row in matched.iterrows():
        key = tuple(row[k] for k in KEYS)
        contention = row.get("contention", "") or ""
        speed, memory = row["samples_per_s_ratio"], row["peak_mem_bytes_ratio"]
        low, high = row.get("samples_per_s_low", math.nan), row.get("samples_per_s_high", math.nan)
        if pd.notna(speed) and speed < 1 - threshold and not (pd.notna(high) and high >= 1.0):
            found.append(Regression(key, "throughput", speed - 1, low, high, contention))
        low, high = row.get("peak_mem_bytes_low", math.nan), row.get("peak_mem_bytes_high", math.nan)
        if pd.notna(memory) and memory > 1 + threshold and not (pd.notna(low) and low <= 1.0):
            found.append(Regression(key, "peak memory", memory - 1, low, high, contention))
    return found


def unsettled(matched: pd.DataFrame, threshold: float) -> list[str]:
    """Rows past the threshold whose interval still includes 1.00: not flagged, but named."""
    lines = []
    for _, row in matched.iterrows():
        workload, dataset, accelerator, device, trick = (row[k] for k in KEYS)
        accelerator = _where(accelerator, device)
        speed, high = row["samples_per_s_ratio"], row.get("samples_per_s_high", math.nan)
        if pd.notna(speed) and speed < 1 - threshold and pd.notna(high) and high >= 1.0:
            lines.append(f"{trick} ({workload}, {dataset}, {accelerator}): throughput {speed - 1:+.1%}, but B/A 95% CI "
                         f"{row['samples_per_s_low']:.2f}-{high:.2f} includes 1.00: not flagged (more --repeats would settle it)")
        memory, low = row["peak_mem_bytes_ratio"], row.get("peak_mem_bytes_low", math.nan)
        if pd.notna(memory) and memory > 1 + threshold and pd.notna(low) and low <= 1.0:
            lines.append(f"{trick} ({workload}, {dataset}, {accelerator}): peak memory {memory - 1:+.1%}, but B/A 95% CI "
                         f"{low:.2f}-{row['peak_mem_bytes_high']:.2f} includes 1.00: not flagged")
    return lines


def _cell(a: float, b: float, ratio: float, fmt: str, scale: float = 1.0) -> str:
    if pd.isna(a) and pd.isna(b):
        return "-"
    left = "-" if pd.isna(a) else format(a / scale, fmt)
    right = "-" if pd.isna(b) else format(b / scale, fmt)
    return f"{left} -> {right}" + (f" ({ratio:.2f}x)" if pd.notna(ratio) else "")


def comparison_table(matched: pd.DataFrame) -> pd.DataFrame:
    """Display strings for one group's rows: each metric as 'A -> B (B/A)'; 'A -> B' statuses when they differ."""
    out = pd.DataFrame()
    out["trick"] = matched["trick"]
    out["status"] = [sa if sa == sb else f"{sa} -> {sb}" for sa, sb in zip(matched["status_a"], matched["status_b"])]
    for metric, label, fmt in METRICS:
        scale = 2**20 if metric == "peak_mem_bytes" else 1.0
        out[label] = [
            _cell(a, b, r, fmt, scale)
            for a, b, r in zip(matched[f"{metric}_a"], matched[f"{metric}_b"], matched[f"{metric}_ratio"])
        ]
    noisy = [bool(x) or bool(y) for x, y in zip(matched["noisy_a"].fillna(False), matched["noisy_b"].fillna(False))]
    out["samples/s"] = [text + (" noisy" if flag else "") for text, flag in zip(out["samples/s"], noisy)]
    return out


def format_comparison(comparison: Comparison, name_a: str, name_b: str, threshold: float | None = None) -> str:
    lines = [f"A: {name_a}", f"B: {name_b}", "Each cell: A -> B (B/A); medians over repeats; noisy: IQR/median > 10% in A or B."]
    if comparison.matched.empty:
        lines += ["", "No row is present in both runs."]
    else:
        for (workload, dataset, accelerator, device), rows in comparison.matched.groupby(KEYS[:4], sort=False):
            lines += ["", f"{workload} on {_where(accelerator, device)}, dataset {dataset}",
                      comparison_table(rows).to_markdown(index=False, tablefmt="simple", disable_numparse=True)]
    for label, frame in ((f"Only in A ({name_a})", comparison.only_a), (f"Only in B ({name_b})", comparison.only_b)):
        if not frame.empty:
            lines += ["", f"{label}:"]
            lines += [f"  {r.trick} ({r.workload}, {r.dataset}, {_where(r.accelerator, r.device_name)}): {r.status}" for r in frame.itertuples()]
    contended_rows = [f"{r.trick} ({r.workload}, {r.dataset}, {_where(r.accelerator, r.device_name)}): {r.contention}"
                      for r in comparison.matched.itertuples() if getattr(r, "contention", "")]
    if contended_rows:
        lines += ["", "Rows whose runs carried contention warnings (other processes used the CPU during fit; "
                  "their timings are not the runs' alone):", *(f"  {line}" for line in contended_rows)]
    if threshold is not None:
        lines.append("")
        if comparison.regressions:
            lines.append(f"Regressions beyond {threshold * 100:g}% whose interval excludes no change "
                         "(throughput drop or peak memory growth):")
            lines += [f"  {regression}" for regression in comparison.regressions]
        unsure = unsettled(comparison.matched, threshold)
        if not comparison.regressions and unsure:
            lines.append(f"No throughput drop or peak memory growth beyond {threshold * 100:g}% that its interval confirms:")
        elif not comparison.regressions:
            lines.append(f"No throughput drop or peak memory growth beyond {threshold * 100:g}%.")
        lines += [f"  {line}" for line in unsure]
    return "\n".join(lines)
