"""Results -> pandas tables: one summary row per (workload, dataset, accelerator, device, trick) with ratios.

Ratios are taken against the baseline of the same workload, dataset, accelerator and device name
(harness.report.devices), so each cell reads "this trick, against doing nothing, on this machine";
a trick with no same-device baseline gets no ratio. With repeats, each number is the median
over repeats, except throughput: its median and IQR are taken over the timing blocks of all repeats
pooled, so that a cell is flagged noisy (IQR/median > 10%) whether blocks or repeats disagree. Where
a run was measured on both CPU and GPU, GPU rows carry their GPU/CPU speed ratio. The summary also
carries each row's time to the target val loss (see ``harness.report.target``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections.abc import Sequence

import pandas as pd

from harness.measuring.measure import NOISY_IQR_RATIO, iqr
from harness.report.devices import with_devices
from harness.report.target import format_to_target, target_frame
from harness.spec import BASELINE, Result

GROUP = ["workload", "dataset", "accelerator", "device_name"]
# metric, column label, whether a ratio is shown
RATIO_METRICS = ["samples_per_s", "step_time_ms", "peak_mem_bytes", "val_loss", "test_loss", "wall_s"]
NUMERIC = [
    "samples_per_s", "samples_per_s_iqr", "step_time_ms", "peak_mem_bytes", "train_loss", "val_loss",
    "test_loss", "wall_s", "fit_s", "tune_s", "steps", "optimizer_steps", "epochs", "blocks_measured", "batch_size",
    "flops_per_sample", "flops_per_s", "mfu", "compile_s",
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
    results = with_devices(results)
    frame = results_frame(results)
    if frame.empty:
        return frame
    ok = frame[frame["status"] == "ok"]
    keys = [*GROUP, "trick"]
    order = [BASELINE, *sorted(set(frame["trick"]) - {BASELINE})]  # runs are shuffled (harness/runfolder/plan.py): a stable order
    numeric = ok.groupby(keys, sort=False)[NUMERIC].median()
    noisy = ok.groupby(keys, sort=False)["noisy"].agg(lambda s: bool(s.fillna(False).any()))
    first = frame.groupby(keys, sort=False).agg(
        status=("status", _status),
        reason=("reason", lambda s: "; ".join(sorted({r for r in s if r}))),
        precision=("precision", "first"),
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
    summary["too_short"] = _too_short(summary, [r for r in results if r.status == "ok"])
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
        key = (result.workload, result.dataset, result.accelerator, result.device_name, result.trick)
        pooled.setdefault(key, []).extend(result.block_samples_per_s)
    for index, row in summary.iterrows():
        rates = pooled.get(tuple(row[k] for k in [*GROUP, "trick"]))
        if not rates:
            continue  # results from before blocks were kept: the per-run medians stand
        median = statistics.median(rates)
        spread = iqr(rates)
        summary.at[index, "samples_per_s"] = median
        summary.at[index, "samples_per_s_iqr"] = spread
        summary.at[index, "noisy"] = bool(median > 0 and spread / median > NOISY_IQR_RATIO)


MIN_BLOCKS = 2  # fewer kept timing blocks than this: no spread to judge by, so no speed verdict


def too_short(result: Result) -> bool:
    """Whether a run's speed was measured on too little to judge: fewer than ``MIN_BLOCKS`` timing blocks
    after warm-up, or warm-up blocks counted in (``measure_warning``; its ``±0%`` means nothing)."""
    if "warm-up included" in str(result.details.get("measure_warning", "")):
        return True
    return result.blocks_measured is not None and result.blocks_measured < MIN_BLOCKS


def _too_short(summary: pd.DataFrame, ok: Sequence[Result]) -> list[bool]:
    """Per summary row: any of its repeats too short to judge (see :func:`too_short`)."""
    short = {(r.workload, r.dataset, r.accelerator, r.device_name, r.trick) for r in ok if too_short(r)}
    return [tuple(row[k] for k in [*GROUP, "trick"]) in short for _, row in summary.iterrows()]


def _gpu_cpu_speed(summary: pd.DataFrame) -> list[float]:
    """samples/s on GPU over samples/s on CPU for the same workload, dataset and trick (GPU rows only);
    none when the CPU rows come from more than one CPU model (which one would it be against?)."""
    cpus: dict[tuple[str, str, str], list[float]] = {}
    for _, row in summary[summary["accelerator"] == "cpu"].iterrows():
        cpus.setdefault((row["workload"], row["dataset"], row["trick"]), []).append(row["samples_per_s"])
    ratios = []
    for _, row in summary.iterrows():
        found = cpus.get((row["workload"], row["dataset"], row["trick"]), [])
        cpu = found[0] if len(found) == 1 else None
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
    """Human-readable strings for one group's summary rows (Markdown and terminal), every column.

    The ``note`` column holds references (``[1]``) to :func:`table_notes`, so that a long warning
    wraps below the table instead of widening every row. :func:`split_columns` divides the columns
    into the main table and two more.
    """
    out = pd.DataFrame()
    out["trick"] = summary["trick"]
    out["status"] = summary["status"]
    short = summary["too_short"] if "too_short" in summary else pd.Series(False, index=summary.index)
    out["samples/s"] = [
        _with_ratio(v, r, ",.0f")
        + (" too short" if s and pd.notna(v) else (f" ±{iqr / v:.0%}" if pd.notna(iqr) and v else "") + (" noisy" if n else ""))
        for v, r, iqr, n, s in zip(summary["samples_per_s"], summary["samples_per_s_ratio"], summary["samples_per_s_iqr"],
                                   summary["noisy"], short)
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
    if "compile_s" in summary and summary["compile_s"].notna().any():  # torch.compile's first-step cost, apart
        out["compile s"] = [f"{v:.1f}" if pd.notna(v) else "-" for v in summary["compile_s"]]
    if summary["gpu_cpu_speed"].notna().any():
        out["GPU/CPU"] = [f"{v:.1f}x" if pd.notna(v) else "-" for v in summary["gpu_cpu_speed"]]
    if (summary["repeats"] > 1).any():
        out["runs"] = summary["repeats"].astype(str)
    out["precision"] = summary["precision"].fillna("")
    out["batch"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["batch_size"]]
    out["opt steps"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in summary["optimizer_steps"]]
    refs, _ = _numbered_notes(summary)
    out["note"] = refs
    return out


# The main table: what a reader needs to decide (the terminal shows only these). The other columns
# follow in report.md and report.html as two more tables, and every number is in summary.csv: the
# rest of the measurements, then how each row ran. Three tables of at most ~10 columns each keep
# every line under ~160 characters in report.md and every table inside a 1,400 px window.
MAIN_COLUMNS = ["trick", "status", "samples/s", "peak mem MiB", "val loss", "wall s", "to target s", "note"]
SETUP_COLUMNS = ["runs", "precision", "batch", "opt steps"]
PART_TITLES = ("", "More numbers:", "How each row ran:")


def split_columns(table: pd.DataFrame) -> list[pd.DataFrame]:
    """[main table, more numbers, setup] of a display table or its marks, each with ``trick`` first;
    a part with no column but ``trick`` is left out (its title in :data:`PART_TITLES` goes with it)."""
    main = [c for c in MAIN_COLUMNS if c in table.columns]
    setup = [c for c in SETUP_COLUMNS if c in table.columns]
    more = [c for c in table.columns if c not in main and c not in setup]
    return [table[["trick", *columns]] if columns and columns[0] != "trick" else table[columns]
            for columns in (main, more, setup)]


def _note_items(reason: object, details: object) -> list[str]:
    """A skipped or failed row's reason, else the warnings its tricks recorded (and a resume, which
    makes the row's time and samples start at the checkpoint)."""
    if isinstance(reason, str) and reason:
        return [reason]
    try:
        parsed = json.loads(details) if isinstance(details, str) else {}
    except json.JSONDecodeError:
        parsed = {}
    if not isinstance(parsed, dict):
        return []
    warnings = parsed.get("warnings", [])
    notes = [f"warning: {w}" for w in (warnings if isinstance(warnings, list) else [])]
    if parsed.get("resumed_from"):
        notes.insert(0, f"resumed from {parsed['resumed_from']}: times, samples and curve count from there")
    return notes


# harness.measuring.contention.contention_warning's words, read back so that a group says them once
CONTENTION = re.compile(
    r"^warning: other processes used (?P<share>\d+)% of the machine's CPU time during fit: the timings are not "
    r"this run's alone; rerun on an idle machine(?:; oversubscribed: about (?P<busy>\d+) of (?P<cpus>\d+) CPUs "
    r"were busy elsewhere while this run used (?P<threads>\d+) torch threads.*)?$"
)


def _contention_note(hits: list[tuple[str, re.Match[str]]]) -> str:
    """One note for every row of a group that carried a contention warning: each row's share, and the
    oversubscription (when any) once."""
    shares = ", ".join(f"{trick} {match['share']}%" for trick, match in hits)
    text = (f"contention: other processes used this share of the machine's CPU time during fit ({shares}): "
            "these timings are not the runs' alone; rerun on an idle machine.")
    cases: dict[tuple[str, str, str], list[str]] = {}
    for trick, match in hits:
        if match["busy"]:
            cases.setdefault((match["busy"], match["cpus"], match["threads"]), []).append(trick)
    for (busy, cpus, threads), tricks in cases.items():
        text += (f" Oversubscribed ({', '.join(tricks)}): about {busy} of {cpus} CPUs were busy elsewhere while each run "
                 f"used {threads} torch threads, the likely cause of a collapse in speed (try --tricks cpu-threads).")
    return text


def _numbered_notes(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Each row's note references (``[1, 2]``) and the group's numbered note texts.

    A note that several rows share gets one number; the contention warnings (one per row, each
    with its own share of the CPU) become one note for the whole group.
    """
    keys: list[str] = []  # note keys in order of first use
    texts: dict[str, str] = {}
    contention: list[tuple[str, re.Match[str]]] = []
    row_keys: list[list[str]] = []
    for trick, reason, details in zip(summary["trick"], summary["reason"], summary["details"]):
        mine = []
        for item in _note_items(reason, details):
            match = CONTENTION.match(item)
            key = "contention" if match else item
            if match:
                contention.append((str(trick), match))
            else:
                texts[key] = item
            if key not in keys:
                keys.append(key)
            if key not in mine:
                mine.append(key)
        row_keys.append(mine)
    if contention:
        texts["contention"] = _contention_note(contention)
    number = {key: i + 1 for i, key in enumerate(keys)}
    refs = ["[" + ", ".join(str(number[k]) for k in mine) + "]" if mine else "" for mine in row_keys]
    return refs, [texts[key] for key in keys]


def table_notes(summary: pd.DataFrame) -> list[str]:
    """The group's notes, in the order of the ``[n]`` references of :func:`display_table`'s note column."""
    return _numbered_notes(summary)[1]


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
SPEED_COLUMNS = ("samples/s", "ms/batch", "MFU")  # no best/worst from a run too short to judge
MARK_TOLERANCE = 0.01  # values within 1% count as tied: 855 vs 856 MiB is no best and worst
# Peak memory's noise band: a CPU's max RSS is the whole process's (Python, torch, Lightning) and moved
# by 1-3% between identical runs here; CUDA's max allocated repeats to the byte.
MEM_NOISE = {"max_rss": 0.05, "cuda_max_allocated": 0.01}


def mem_noise(mem_kinds: Sequence[object]) -> float:
    """The memory noise band for a group's rows: the widest of their kinds' (5% when unknown)."""
    bands = [MEM_NOISE.get(str(kind), 0.05) for kind in mem_kinds if isinstance(kind, str) and kind]
    return max(bands, default=0.05)


def _close(values: pd.Series, target: float, tolerance: float) -> pd.Series:
    if math.isinf(target):
        return values == target
    return (values - target).abs() <= tolerance * abs(target)


def cell_marks(summary: pd.DataFrame) -> pd.DataFrame:
    """For one group's summary rows: "best", "worst" or "" per display cell, "noisy" added where flagged.

    Best and worst are taken per column over the rows that have a value; values within 1% of the
    best (worst) share its mark, and a column whose best and worst are within 1% of each other has
    no mark (nothing to choose). Peak memory uses its noise band instead of 1% (:data:`MEM_NOISE`).
    "not reached" (infinite time to target) is the worst there is. A row whose speed was measured on
    too little (:func:`too_short`) takes no part in the speed columns' marks and reads "short" there.
    Indexed and labelled like ``display_table(summary)``; a cell can read "best noisy".
    """
    table = display_table(summary)
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    short = (summary["too_short"] if "too_short" in summary else pd.Series(False, index=summary.index))
    short = short.fillna(False).astype(bool).set_axis(table.index)
    for column, (metric, sense) in BEST_IS.items():
        if column not in table.columns:
            continue
        values = pd.to_numeric(summary[metric], errors="coerce").astype(float).set_axis(table.index)
        if column in SPEED_COLUMNS:
            values = values.where(~short)
        tolerance = mem_noise(list(summary["mem_kind"])) if column == "peak mem MiB" else MARK_TOLERANCE
        present = values.dropna()
        if len(present) < 2:
            continue
        best, worst = (present.max(), present.min()) if sense == "max" else (present.min(), present.max())
        if math.isinf(best) or (not math.isinf(worst) and abs(worst - best) <= tolerance * abs(best)):
            continue  # all "not reached", or nothing to choose between
        marks.loc[_close(values, worst, tolerance), column] = "worst"
        marks.loc[_close(values, best, tolerance), column] = "best"
    noisy = summary["noisy"].fillna(False).astype(bool).set_axis(table.index)
    for column in NOISY_COLUMNS:
        marks.loc[noisy & ~short, column] = (marks.loc[noisy & ~short, column] + " noisy").str.strip()
    for column in (c for c in SPEED_COLUMNS if c in table.columns):
        present = table[column] != "-"
        marks.loc[short & present, column] = "short"
    return marks
