"""Did a run's position in its repeat bias its speed? The check behind the shuffled order, on every report.

The order of baseline and tricks is shuffled within each repeat (harness.runfolder.plan), so a position effect (a
first process that pays for a cold page cache, a machine that has not settled) spreads over every
trick instead of landing on the baseline. Shuffling hides such an effect from the verdicts; it does
not remove it from the runs. This check shows it, so that a user can see on their own machine whether
positions mattered: each run's throughput relative to the median of its cell (same workload, dataset,
accelerator and trick), for the runs that came first in their repeat against the rest.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

from harness.measuring.stats import student_t_quantile
from harness.report.devices import with_devices
from harness.spec import Result

BAND = 1.03  # a first-run effect under 3% is called "none" when its interval lies inside this band


def position_in_repeat(results: Sequence[Result]) -> dict[str, int]:
    """run_id -> its position among the runs that trained within (workload, dataset, accelerator, device, repeat),
    in the order of ``results`` (results.jsonl is appended in run order, which is plan.json's order).
    Skipped and failed rows are not counted: the first run to train is the one a cold start would hit."""
    seen: dict[tuple[str, str, str, str, int], int] = defaultdict(int)
    positions = {}
    for result in results:
        if result.status != "ok" or not result.samples_per_s:
            continue
        key = (result.workload, result.dataset, result.accelerator, result.device_name, result.repeat)
        positions[result.run_id] = seen[key]
        seen[key] += 1
    return positions


def relative_speeds(results: Sequence[Result]) -> tuple[list[float], list[float]]:
    """(first runs, other runs): each measured run's samples/s over its cell's median, for cells of 2+ runs."""
    results = with_devices(results)
    positions = position_in_repeat(results)
    cells: dict[tuple[str, str, str, str, str], list[Result]] = defaultdict(list)
    for result in results:
        if result.status == "ok" and result.samples_per_s:
            cells[(result.workload, result.dataset, result.accelerator, result.device_name, result.trick)].append(result)
    first, rest = [], []
    for runs in cells.values():
        if len(runs) < 2:
            continue
        median = statistics.median(float(run.samples_per_s) for run in runs)  # type: ignore[arg-type]
        for run in runs:
            (first if positions[run.run_id] == 0 else rest).append(float(run.samples_per_s) / median)  # type: ignore[arg-type]
    return first, rest


def _geomean_interval(values: list[float]) -> tuple[float, float, float]:
    logs = [math.log(v) for v in values]
    mean = statistics.fmean(logs)
    half = student_t_quantile(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def order_check_text(results: Sequence[Result]) -> str:
    """One paragraph: how the first runs of the repeats compared with the others, or why it cannot say."""
    first, rest = relative_speeds(results)
    if len(first) < 3 or len(rest) < 3:
        return (
            "Order check: too few repeated runs to compare the first run of each repeat with the others "
            f"({len(first)} first, {len(rest)} later runs in cells of 2+ runs; --repeats 3 or more gives one)."
        )
    value, low, high = _geomean_interval(first)
    others = math.exp(statistics.fmean(math.log(v) for v in rest))
    if low >= 1.0 / BAND and high <= BAND:
        finding = f"no position effect beyond {BAND - 1:.0%}"
    elif high < 1.0:
        finding = "the first run of a repeat was slower; the shuffled order spread that over baseline and tricks alike"
    elif low > 1.0:
        finding = "the first run of a repeat was faster; the shuffled order spread that over baseline and tricks alike"
    else:
        finding = f"cannot tell whether the position mattered (the interval straddles the {BAND - 1:.0%} band)"
    return (
        f"Order check: the runs that came first in their repeat measured {value:.3f}x the median of their cell "
        f"(geometric mean, 95% CI {low:.3f}-{high:.3f}, {len(first)} runs), the later runs {others:.3f}x "
        f"({len(rest)} runs): {finding}."
    )
