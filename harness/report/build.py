"""Gather what the report pages show, once: the summary, per-group tables and plots, per-trick details.

``build_report`` reads results (and the run's TensorBoard logs and artifacts), writes the PNGs under
``<run>/plots/`` and returns a :class:`Report` that the Markdown and HTML pages both render, so the
two pages always show the same numbers.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UserError, first_line
from harness.report import plots
from harness.report.devices import several_devices, with_devices
from harness.report.table import GROUP, cell_marks, display_table, summary_frame, table_notes
from harness.report.tblogs import fit_curves, tb_version_dir
from harness.report.verdicts import Verdict, judge
from harness.runfolder.rundir import inside_run_dir
from harness.spec import Result

PLOTS_DIR = "plots"
# details that are bookkeeping, not something a trick did
HIDDEN_DETAILS = ("dataset_reason", "profile_files")  # profile files are shown as links


@dataclass
class Plot:
    title: str
    path: str  # relative to the run folder, POSIX separators (a Markdown link and the HTML's source)
    caption: str = ""
    error: str = ""  # why the figure could not be drawn from these rows (then there is no file)


@dataclass
class Group:
    """One (workload, dataset, accelerator, device name): its table, its target, its plots."""

    key: tuple[str, str, str, str]
    heading: str
    summary: pd.DataFrame
    table: pd.DataFrame  # display strings, see table.display_table
    marks: pd.DataFrame  # "best", "worst", "noisy" per cell, see table.cell_marks
    target_text: str
    pareto: list[str]
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the table's "[n]" notes, see table.table_notes


@dataclass
class TrickDetails:
    """What one trick did in one group: key/value items and any images it left (e.g. an LR curve)."""

    trick: str
    heading: str
    items: dict[str, str]
    images: list[Plot] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, path relative to the run folder)


@dataclass
class Report:
    run_dir: Path
    env: dict[str, Any]
    results: list[Result]
    summary: pd.DataFrame
    groups: list[Group]
    details: list[TrickDetails]
    target_val_loss: float | None
    verdicts: list[Verdict] = field(default_factory=list)  # one per trick and group, see report.verdicts


def slug(*parts: str) -> str:
    """A file-name-safe name: 'autoencoder', 'bf16-mixed+grad-clipping' -> 'autoencoder-bf16-mixed-grad-clipping'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-")


def build_report(run_dir: Path, results: list[Result], env: dict[str, Any], target_val_loss: float | None = None,
                 draw: bool = True) -> Report:
    """Summarise ``results`` and, with ``draw``, (re)write every PNG of the run under ``plots/``.

    One group (table, Pareto front, plots) per workload, dataset, accelerator and device name: a
    cluster of mixed GPUs gives one table per GPU model (harness.report.devices)."""
    results = with_devices(results)
    summary = summary_frame(results, target_val_loss)
    plots_dir = run_dir / PLOTS_DIR
    if draw and plots_dir.is_dir():
        for old in plots_dir.glob("*.png"):  # the folder is the report's own; stale plots must not linger
            old.unlink()
    groups = []
    if not summary.empty:
        mixed = several_devices(results)
        for key, rows in summary.groupby(GROUP, sort=False):
            groups.append(_group(run_dir, results, key, rows.reset_index(drop=True), target_val_loss, draw, key[:3] in mixed))
    details = _trick_details(run_dir, results, draw)
    return Report(run_dir, env, results, summary, groups, details, target_val_loss, judge(results, target_val_loss=target_val_loss))


def _group(run_dir: Path, results: list[Result], key: tuple[str, str, str, str], rows: pd.DataFrame,
           target_val_loss: float | None, draw: bool, name_device: bool = False) -> Group:
    workload, dataset, accelerator, device = key
    where = f"{accelerator} ({device or 'unnamed device'})" if device or name_device else accelerator
    world = int(rows["world_size"].max()) if rows["world_size"].notna().any() else 1
    if world > 1:  # samples/s is the sum over the processes, peak memory the largest process's
        strategy = next((s for s in rows["strategy"] if s), "")
        where = f"{world} x {where} with {strategy}, samples/s summed over the processes, memory per process"
    heading = f"{workload} on {where}, dataset {dataset}"
    target = rows["target_val_loss"].dropna()
    if target.empty:
        target_text = "Target val loss: none (no baseline val loss in this run; set one with `--target-val-loss`)."
    elif target_val_loss is not None:
        target_text = f"Target val loss: {target.iloc[0]:.4g} (`--target-val-loss`)."
    else:
        target_text = f"Target val loss: {target.iloc[0]:.4g} (the baseline's final val loss)."
    front = plots.pareto_mask(rows["wall_s"], rows["val_loss"])
    group = Group(
        key=key, heading=heading, summary=rows, table=display_table(rows), marks=cell_marks(rows),
        target_text=target_text, pareto=list(rows.loc[front, "trick"]), notes=table_notes(rows),
    )
    if not draw:
        return group
    colors = plots.trick_colors(list(rows["trick"]))
    name = slug(workload, dataset, accelerator, *([device or "unnamed"] if name_device else []))
    group.plots.append(_save(run_dir, f"{name}-throughput-memory.png", lambda: plots.throughput_memory_figure(rows, heading),
                             "Throughput and peak memory per trick",
                             "Bars: median; whiskers: IQR over timing blocks; hatched: noisy (IQR/median > 10%). "
                             "Green: better than the baseline, red: worse; grey: within 1% of the baseline (peak memory: "
                             "within its noise band, 5% for a CPU's max RSS, 1% for CUDA's max allocated)."))
    series, x_label = _loss_series(run_dir, results, key, list(rows["trick"]))
    if any(series.values()):
        group.plots.append(_save(run_dir, f"{name}-loss-curves.png",
                                 lambda: plots.loss_curves_figure(series, x_label, heading, colors),
                                 "Loss curves of every trick over the baseline's",
                                 f"Read from the TensorBoard event files of each run's `fit` (first repeat); x: {x_label}."))
    if rows[["wall_s", "val_loss"]].dropna().shape[0] > 0:
        group.plots.append(_save(run_dir, f"{name}-pareto.png", lambda: plots.pareto_figure(rows, heading, colors),
                                 "Wall time against final val loss",
                                 "Pareto front: the runs that no other run beats on both wall time and val loss, "
                                 f"i.e. the cheapest for their quality: {', '.join(group.pareto) or 'none'}."))
    return group


# what matplotlib raises for values it cannot place (a throughput of 1e-225 next to 5e4, a ratio of 1e300:
# a text position past its integer range); rows are untrusted input, a figure of them must not end the report
DRAW_ERRORS = (ValueError, TypeError, OverflowError, FloatingPointError, RuntimeError)


def _save(run_dir: Path, name: str, figure: Any, title: str, caption: str) -> Plot:
    """Draw and save a figure (``figure``: the figure, or a function that makes it); a figure that
    cannot be drawn from these rows becomes a Plot that says why, and the rest of the report stands."""
    try:
        made = figure() if callable(figure) else figure
        plots.save_png(made, run_dir / PLOTS_DIR / name)
    except DRAW_ERRORS as error:
        import matplotlib.pyplot as plt

        plt.close("all")
        return Plot(title=title, path="", caption=caption, error=f"{type(error).__name__}: {first_line(error)[:200]}")
    return Plot(title=title, path=f"{PLOTS_DIR}/{name}", caption=caption)


def _first_ok(results: list[Result], key: tuple[str, str, str, str], trick: str) -> Result | None:
    candidates = [r for r in results if (r.workload, r.dataset, r.accelerator, r.device_name) == key and r.trick == trick]
    ok = sorted((r for r in candidates if r.status == "ok"), key=lambda r: r.repeat)
    return ok[0] if ok else None


def _step_to_samples(result: Result) -> tuple[np.ndarray, np.ndarray] | None:
    """(optimizer steps, samples seen) at each validation, from the recorded curve, starting at (0, 0)."""
    points = [(p["step"], p["samples"]) for p in result.curve if "step" in p and "samples" in p]
    steps = np.array([0, *(s for s, _ in points)], dtype=float)
    samples = np.array([0, *(n for _, n in points)], dtype=float)
    if len(points) == 0 or np.any(np.diff(steps) <= 0):
        return None
    return steps, samples


def _loss_series(run_dir: Path, results: list[Result], key: tuple[str, str, str, str],
                 tricks: list[str]) -> tuple[dict[str, dict[str, pd.DataFrame]], str]:
    """Each trick's fit curves from TensorBoard, on a shared x axis: samples seen when every run's
    step->samples map is known (tricks that change the batch or accumulate stay comparable), else steps.

    A TensorBoard step ``s`` is logged during optimizer step ``s + 1``, so x is taken at ``s + 1``.
    """
    raw: dict[str, tuple[Result, dict[str, pd.DataFrame]]] = {}
    for trick in tricks:
        result = _first_ok(results, key, trick)
        if result is not None:
            curves = fit_curves(tb_version_dir(run_dir, result))
            if curves:
                raw[trick] = (result, curves)
    maps = {trick: _step_to_samples(result) for trick, (result, _) in raw.items()}
    use_samples = bool(maps) and all(m is not None for m in maps.values())
    series: dict[str, dict[str, pd.DataFrame]] = {}
    for trick, (_, curves) in raw.items():
        series[trick] = {}
        for tag, frame in curves.items():
            steps = frame["step"].to_numpy(dtype=float) + 1
            x = np.interp(steps, *maps[trick]) if use_samples else steps
            series[trick][tag] = pd.DataFrame({"x": x, "value": frame["value"].to_numpy(dtype=float)})
    return series, ("training samples seen" if use_samples else "optimizer steps")


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
        return text if len(text) <= 300 else text[:297] + "..."
    return str(value)


def _trick_details(run_dir: Path, results: list[Result], draw: bool) -> list[TrickDetails]:
    """Per (group, trick), from its first ok run (else its first run): what the run used and did."""
    chosen: dict[tuple[str, str, str, str], Result] = {}
    for result in results:
        key = (result.workload, result.dataset, result.accelerator, result.trick)
        current = chosen.get(key)
        if current is None or (current.status != "ok" and result.status == "ok"):
            chosen[key] = result
    out = []
    for (workload, dataset, accelerator, trick), result in chosen.items():
        items: dict[str, str] = {"status": result.status + (f": {result.reason}" if result.reason else "")}
        if result.status == "ok":
            items.update({
                "precision": result.precision or "-",
                "batch size": _format_value(result.batch_size),
                "epochs run": _format_value(result.epochs),
                "optimizer steps": _format_value(result.optimizer_steps),
                "tune s": f"{result.tune_s:.2f}",
                "fit s": f"{result.fit_s:.2f}" if result.fit_s is not None else "-",
                "loader": result.loader or "-",
            })
        images = []
        for name, value in result.details.items():
            if name in HIDDEN_DETAILS:
                continue
            items[name] = _format_value(value)
            if name.endswith("_png") and run_file(run_dir, value) is not None:
                images.append(image_plot(trick, name, result))
        if draw:
            images += _lr_curve_plots(run_dir, result, images)
        heading = f"{trick} ({workload}, {dataset}, {accelerator})"
        out.append(TrickDetails(trick=trick, heading=heading, items=items, images=images, links=_links(result)))
    return out


# A trick's own figures (details ending in "_png"): what each shows, for the page's caption
IMAGE_TITLES = {
    "lr_curve_png": ("loss against learning rate (Lightning's LR finder)",
                     "Lightning's own plot of the LR finder's search (`LRFinder.plot`); the red dot is the suggested "
                     "learning rate, which the run then trained with."),
}


def image_plot(trick: str, name: str, result: Result) -> Plot:
    """A trick's own PNG with a human title and caption (the detail's key only when it is an unknown one)."""
    title, caption = IMAGE_TITLES.get(name, (name.removesuffix("_png").replace("_", " "), ""))
    found = result.details.get("found_lr")
    if name == "lr_curve_png" and isinstance(found, (int, float)):
        caption += f" Suggested: {found:.3g}."
    return Plot(title=f"{trick}: {title}", path=Path(str(result.details[name])).as_posix(), caption=caption)


def run_file(run_dir: Path, value: object) -> Path | None:
    """The file a row's detail names, when it is one inside the run folder; None otherwise.

    Rows may be crafted (a shared report folder): a PNG or JSON path pointing elsewhere would put
    another file's content into report.html, so it is ignored like a missing file.
    """
    try:
        path = inside_run_dir(run_dir, value, "detail path")
    except UserError:
        return None
    return path if path.is_file() else None


def _links(result: Result) -> list[tuple[str, str]]:
    """The files a run left that a reader may open: its checkpoints and its profiler's reports."""
    links = [(f"{name}.ckpt", path) for name, path in result.checkpoints.items()]
    profiles = result.details.get("profile_files") or []
    links += [(f"profile: {Path(path).name}", path) for path in profiles if isinstance(path, str)]
    return links


def _lr_curve_plots(run_dir: Path, result: Result, existing: list[Plot]) -> list[Plot]:
    """Draw an LR-vs-loss curve from a ``*_json`` detail holding {"lr": [...], "loss": [...]} (the shape
    of Lightning's ``LRFinder.results``) when the trick left no PNG of it."""
    if existing:
        return []
    out = []
    for name, value in result.details.items():
        if not (name.endswith("_json") and run_file(run_dir, value) is not None):
            continue
        try:
            data = json.loads((run_dir / value).read_text())
            lrs, losses = [float(v) for v in data["lr"]], [float(v) for v in data["loss"]]
        except (ValueError, KeyError, TypeError):
            continue
        if not lrs or len(lrs) != len(losses):
            continue
        found = result.details.get("found_lr")
        title = f"{result.trick}: LR finder ({result.workload}, {result.accelerator})"
        found_lr = float(found) if isinstance(found, (int, float)) else None
        figure = functools.partial(plots.lr_curve_figure, lrs, losses, title, found_lr)
        file = f"{slug(result.workload, result.dataset, result.accelerator, result.trick)}-{slug(name[:-5])}.png"
        out.append(_save(run_dir, file, figure, f"{result.trick}: loss against learning rate", ""))
    return out
