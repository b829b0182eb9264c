"""The report's figures, drawn with matplotlib's object API (a ``Figure`` per plot, Agg canvas).

No pyplot: nothing global is touched, so rendering a report never opens a window nor depends on
the backend a user configured. Each function takes plain pandas data and returns a Figure;
``save_png`` writes it. One figure per (workload, dataset, accelerator) group and kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from harness.report.table import mem_noise
from harness.spec import BASELINE

BASELINE_COLOR = "#555555"
BETTER, WORSE = "#2e8b57", "#c0392b"
SAME_WITHIN = 0.01  # a bar within 1% of the baseline's is drawn grey: no change worth a colour
DPI = 100


def save_png(figure: Figure, path: Path) -> Path:
    """Write a PNG without a software/date stamp, so that re-rendering gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def trick_colors(tricks: Sequence[str]) -> dict[str, str]:
    """A stable colour per trick of a group (baseline grey), shared by every figure of the group.

    tab10 without its grey (the baseline's), then tab20's lighter shades, then round again.
    """
    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    palette = [_hex(tab10(i)) for i in range(10) if i != 7]
    palette += [_hex(tab20(i)) for i in range(1, 20, 2) if i != 15]
    others = [t for t in tricks if t != BASELINE]
    colors = {trick: palette[i % len(palette)] for i, trick in enumerate(others)}
    colors[BASELINE] = BASELINE_COLOR
    return colors


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgba[:3])


def pareto_mask(cost: pd.Series, loss: pd.Series) -> pd.Series:
    """True for the rows no other row beats on both: no other is as cheap *and* as good, and better on one.

    Rows with a missing value are never on the front. These are the cheapest runs for a given quality.
    """
    valid = cost.notna() & loss.notna()
    mask = pd.Series(False, index=cost.index)
    points = list(zip(cost[valid], loss[valid]))
    for index, c, l in zip(cost[valid].index, cost[valid], loss[valid]):
        dominated = any((oc <= c and ol <= l) and (oc < c or ol < l) for oc, ol in points)
        mask[index] = not dominated
    return mask


def _bar_panel(axes, labels: list[str], values: pd.Series, ratios: pd.Series, statuses: list[str],
               higher_is_better: bool, title: str, xerr: pd.Series | None = None,
               hatched: pd.Series | None = None, same_within: float = SAME_WITHIN) -> None:
    y = np.arange(len(labels))
    heights = values.fillna(0.0).to_numpy(dtype=float)
    colors = []
    for label, ratio in zip(labels, ratios):
        if label == BASELINE or pd.isna(ratio) or abs(ratio - 1.0) <= same_within:
            colors.append(BASELINE_COLOR)
        else:
            colors.append(BETTER if (ratio > 1.0) == higher_is_better else WORSE)
    errors = None if xerr is None else xerr.fillna(0.0).to_numpy(dtype=float) / 2
    bars = axes.barh(y, heights, xerr=errors, color=colors, alpha=0.85, capsize=3, error_kw={"elinewidth": 1})
    if hatched is not None:
        for bar, flag in zip(bars, hatched.fillna(False)):
            if flag:
                bar.set_hatch("//")
    axes.set_yticks(y, labels)
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    ends = heights + (errors if errors is not None else 0.0)
    right = max(ends.max(initial=0.0), 1e-12)
    for yi, value, end, ratio, status in zip(y, values, ends, ratios, statuses):
        if pd.isna(value):
            axes.text(right * 0.01, yi, status or "-", va="center", fontsize=8, color=WORSE)
        else:
            text = f"{value:,.0f}" + (f"  {ratio:.2f}x" if pd.notna(ratio) else "")
            axes.text(end + right * 0.015, yi, text, va="center", fontsize=8)
    axes.set_xlim(0, right * 1.35)


def throughput_memory_figure(summary: pd.DataFrame, title: str) -> Figure:
    """Two horizontal bar charts per trick: training throughput and peak memory, ratio to the baseline.

    Bars: the median; whiskers: the IQR over timing blocks (centred); hatched: a noisy measurement.
    Green: better than the baseline, red: worse, grey: the baseline or no change (within 1%; memory within
    its noise band, ``table.MEM_NOISE``).
    """
    labels = list(summary["trick"])
    statuses = [str(s) for s in summary["status"]]
    figure = Figure(figsize=(12, 1.2 + 0.45 * len(labels)), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    left.invert_yaxis()  # baseline on top, in the table's order (the y axis is shared: invert once)
    _bar_panel(left, labels, summary["samples_per_s"], summary["samples_per_s_ratio"], statuses, True,
               "training throughput, samples/s (higher is better)", xerr=summary["samples_per_s_iqr"],
               hatched=summary["noisy"])
    mem_kind = ", ".join(sorted({k for k in summary["mem_kind"].dropna() if k})) or "peak memory"
    band = mem_noise(list(summary["mem_kind"]))
    _bar_panel(right, labels, summary["peak_mem_bytes"] / 2**20, summary["peak_mem_bytes_ratio"], statuses, False,
               f"peak memory, MiB ({mem_kind}; lower is better; grey within ±{band:.0%})", same_within=band)
    figure.suptitle(title, fontsize=11)
    return figure


def loss_curves_figure(
    series: Mapping[str, Mapping[str, pd.DataFrame]], x_label: str, title: str, colors: Mapping[str, str]
) -> Figure:
    """Small multiples: one panel per trick, its train and val loss over the baseline's (grey).

    ``series[trick][tag]`` is a frame with columns x, value (tag: train_loss or val_loss). Shared
    axes, so panels compare at a glance; a log y scale when the losses span more than 20x.
    """
    tricks = [t for t in series if t != BASELINE] or [BASELINE]
    columns = min(3, len(tricks))
    rows = math.ceil(len(tricks) / columns)
    figure = Figure(figsize=(4.2 * columns + 0.5, 3.0 * rows + 0.8), layout="constrained")
    axes_grid = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    values = [frame["value"] for curves in series.values() for frame in curves.values() if not frame.empty]
    positive = pd.concat(values) if values else pd.Series(dtype=float)
    positive = positive[positive > 0]
    log_y = not positive.empty and positive.max() / positive.min() > 20
    baseline = series.get(BASELINE, {})
    for axes, trick in zip(axes_grid, tricks):
        if trick != BASELINE:
            _draw_curves(axes, baseline, BASELINE_COLOR, "baseline", alpha=0.6)
        _draw_curves(axes, series.get(trick, {}), colors.get(trick, "C0"), trick)
        axes.set_title(trick, fontsize=9)
        axes.grid(alpha=0.3)
        if log_y:
            axes.set_yscale("log")
        if not series.get(trick):
            axes.text(0.5, 0.5, "no TensorBoard curve", transform=axes.transAxes, ha="center", color=WORSE)
        axes.legend(fontsize=7, loc="upper right")
    for axes in axes_grid[len(tricks):]:
        axes.set_visible(False)
    for axes in axes_grid[(rows - 1) * columns:]:
        axes.set_xlabel(x_label, fontsize=8)
    for axes in axes_grid[::columns]:
        axes.set_ylabel("loss", fontsize=8)
    figure.suptitle(title + "\nsolid: train loss, dashed with dots: val loss; grey: baseline", fontsize=10)
    return figure


def _draw_curves(axes, curves: Mapping[str, pd.DataFrame], color: str, label: str, alpha: float = 1.0) -> None:
    train = curves.get("train_loss")
    if train is not None and not train.empty:
        marker = "." if len(train) < 5 else None  # a curve of one point is a dot, not nothing
        axes.plot(train["x"], train["value"], color=color, alpha=alpha, linewidth=1.2, marker=marker,
                  label=f"{label} train")
    val = curves.get("val_loss")
    if val is not None and not val.empty:
        axes.plot(val["x"], val["value"], color=color, alpha=alpha, linewidth=1.2, linestyle="--", marker="o",
                  markersize=3, label=f"{label} val")


# Where a Pareto label may sit around its point, in points (tried in this order): right, left, above,
# below, then farther out. The first place that overlaps no label placed before and no point wins.
LABEL_OFFSETS = [(6, 4), (6, -11), (-6, 4), (-6, -11), (0, 10), (0, -17), (6, 18), (6, -25), (-6, 18), (-6, -25),
                 (6, 32), (6, -39), (-6, 32), (-6, -39), (6, 46), (6, -53), (-6, 46), (-6, -53)]


def place_labels(figure: Figure, axes, labels: list[tuple[str, float, float, bool]]) -> list:
    """Annotate each (text, x, y, bold) point where its label overlaps no earlier label nor any point.

    Greedy, in the order given, with the text's real extent from an Agg renderer; a label that finds
    no free place among :data:`LABEL_OFFSETS` takes the one that overlaps least. The labels do not
    take part in the layout (the axes keep their size however crowded the labels are).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    figure.draw_without_rendering()  # settle the layout, so that data -> pixels is final
    renderer = canvas.get_renderer()
    dots = [axes.transData.transform((x, y)) for _, x, y, _ in labels]
    radius = 4 * figure.dpi / 72  # a marker's half size in pixels
    taken = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius) for px, py in dots]
    frame = axes.get_window_extent(renderer)
    annotations = []
    for text, x, y, bold in labels:
        best, best_cost = None, math.inf
        for dx, dy in LABEL_OFFSETS:
            far = abs(dy) > 11  # away from its point: a thin leader line says whose label it is
            annotation = axes.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                                       ha="left" if dx >= 0 else "right", fontweight="bold" if bold else "normal",
                                       arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6} if far else None)
            annotation.set_in_layout(False)
            annotation.update_positions(renderer)
            box = Text.get_window_extent(annotation, renderer)  # the text alone, not its leader line
            cost = sum(_overlap(box, other) for other in taken) + 10 * _outside(box, frame)
            if cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_cost, best_box = annotation, cost, box
            else:
                annotation.remove()
            if cost == 0:
                break
        taken.append(best_box)
        annotations.append(best)
    return annotations


def _overlap(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


def _outside(box, frame) -> float:
    """The area of ``box`` that lies outside ``frame`` (a label cut by the axes' edge)."""
    return box.width * box.height - _overlap(box, frame)


def pareto_figure(summary: pd.DataFrame, title: str, colors: Mapping[str, str]) -> Figure:
    """Wall time against final val loss, one point per row; the Pareto front joined and labelled.

    Every point is labelled with its trick, placed so that labels do not cover each other
    (:func:`place_labels`): rows of the same wall time and loss (a trick that changed nothing) sit on one spot.
    """
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    data = summary[["trick", "wall_s", "val_loss"]].dropna()
    front = pareto_mask(data["wall_s"], data["val_loss"])
    labels = []
    for (_, row), on_front in zip(data.iterrows(), front):
        color = colors.get(row["trick"], "C0")
        axes.scatter(row["wall_s"], row["val_loss"], s=60 if on_front else 35, color=color,
                     edgecolors="black" if on_front else color, linewidths=1.2 if on_front else 0,
                     alpha=1.0 if on_front else 0.6, zorder=3)
        labels.append((str(row["trick"]), float(row["wall_s"]), float(row["val_loss"]), bool(on_front)))
    best = data[front].sort_values("wall_s")
    if len(best) > 1:
        axes.step(best["wall_s"], best["val_loss"], where="post", color="black", linewidth=1, alpha=0.6,
                  label="Pareto front", zorder=2)
        axes.legend(fontsize=8)
    axes.set_xlabel("wall time, s (whole run)")
    axes.set_ylabel("final val loss")
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.12)  # room for the labels of the outermost points
    axes.set_title(title + "\nbold, outlined: Pareto front (no other run is both faster and lower-loss)", fontsize=10)
    labels.sort(key=lambda label: (not label[3], label[1]))  # the front's labels first: they get the best places
    place_labels(figure, axes, labels)
    return figure


def lr_curve_figure(lrs: Sequence[float], losses: Sequence[float], title: str, found_lr: float | None = None) -> Figure:
    """The LR finder's loss against learning rate (log x), the chosen LR marked."""
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.plot(lrs, losses, color="C0")
    axes.set_xscale("log")
    if found_lr:
        axes.axvline(found_lr, color=WORSE, linestyle="--", label=f"found lr {found_lr:.3g}")
        axes.legend(fontsize=8)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    return figure
