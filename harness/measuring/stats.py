"""Confidence intervals for ratios of throughputs, with run-to-run noise in them.

A run's timing blocks are correlated (the same process, allocator, cache and neighbours), and on a
shared machine the disagreement between two runs of the same setup is several times the spread of
blocks inside one run. An interval built from blocks alone would call that disagreement a finding.
So the unit of evidence is the *repeat*: each repeat gives one value of the ratio (trick over
baseline, harness over plain loop, ...) from runs that ran next to each other in time, so that the
machine's slow drift cancels in it (a paired design), and the interval comes from how those
per-repeat values disagree. One repeat gives an interval from its blocks alone, and says so.

Pure functions on plain lists, no I/O: tested on planted truth (tests/test_stats.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Runs: one list of block samples/s per repeat; an arm is the list of its runs, one per repeat.
Runs = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval; ``repeats`` says what the spread covers."""

    value: float
    low: float
    high: float
    repeats: int
    level: float = 0.95

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def blocks_only(self) -> bool:
        """One repeat: the interval knows the blocks of one run only, not how runs disagree."""
        return self.repeats < 2

    def describe(self, unit: str = "x") -> str:
        note = "; 1 repeat: run-to-run noise not included" if self.blocks_only else ""
        repeats = f"{self.repeats} repeat{'s' if self.repeats != 1 else ''}"
        return f"{self.value:.3f}{unit} (95% CI {self.low:.3f}-{self.high:.3f}, {repeats}{note})"


def run_statistic(blocks: Sequence[float]) -> float:
    """One run's throughput: the median of its kept blocks, as the rows report it."""
    return float(np.median(np.asarray(blocks, dtype=float)))


def paired_interval(
    arms: Sequence[Runs],
    combine: Callable[[Sequence[float]], float],
    level: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
) -> Interval:
    """``combine`` of the arms' throughputs, e.g. trick / baseline, with an interval that includes
    run-to-run noise.

    ``arms[a][r]`` holds the kept block rates of arm ``a`` in repeat ``r``; every arm must have the
    same number of repeats. Each repeat gives one value, ``combine`` of its arms' run throughputs
    (the median of each run's blocks): the pairing lets the machine's drift between repeats cancel.

    - Two or more repeats: a Student-t interval on the log of the per-repeat values, centred on their
      geometric mean. The repeats are what vary from run to run, and with as few as 3 of them a
      bootstrap over repeats is far too narrow (in simulation it held the truth 16 times in 20 at a
      nominal 95%), while the t interval keeps its level (tests/test_stats.py).
    - One repeat: a bootstrap over that run's blocks only; ``Interval.blocks_only`` says so, since
      blocks of one process are correlated and know nothing of how runs disagree.
    """
    if not arms:
        raise ValueError("paired_interval needs at least one arm")
    repeats = len(arms[0])
    if repeats == 0 or any(len(arm) != repeats for arm in arms):
        raise ValueError(f"every arm needs the same, non-zero number of repeats; got {[len(arm) for arm in arms]}")
    if any(len(run) == 0 for arm in arms for run in arm):
        raise ValueError("every run needs at least one block")
    per_repeat = np.array([combine([run_statistic(arm[r]) for arm in arms]) for r in range(repeats)], dtype=float)
    if repeats >= 2:
        logs = np.log(per_repeat)
        centre = float(logs.mean())
        half = float(student_t_quantile(0.5 + level / 2.0, repeats - 1) * logs.std(ddof=1) / np.sqrt(repeats))
        return Interval(float(np.exp(centre)), float(np.exp(centre - half)), float(np.exp(centre + half)), repeats, level)
    return _block_bootstrap([arm[0] for arm in arms], combine, float(per_repeat[0]), level, draws, seed)


def _block_bootstrap(
    runs: Sequence[Sequence[float]], combine: Callable[[Sequence[float]], float], point: float,
    level: float, draws: int, seed: int,
) -> Interval:
    """Percentile interval of ``combine`` over resamplings of each run's blocks (one repeat)."""
    rng = np.random.default_rng(seed)
    resampled = []
    for run in runs:
        blocks = np.asarray(run, dtype=float)
        resampled.append(np.median(blocks[rng.integers(0, len(blocks), size=(draws, len(blocks)))], axis=1))
    values = np.array([combine([column[d] for column in resampled]) for d in range(draws)])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(point, float(min(low, point)), float(max(high, point)), 1, level)


@functools.lru_cache(maxsize=64)
def student_t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF; no SciPy needed)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    low, high = 0.0, 1e4
    for _ in range(200):
        mid = (low + high) / 2.0
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _t_cdf(t: float, df: int) -> float:
    """CDF of Student's t at t >= 0, from the regularised incomplete beta function."""
    x = df / (df + t * t)
    return 1.0 - 0.5 * _incomplete_beta(df / 2.0, 0.5, x)


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes, betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1.0 - x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1.0 + numerator / c
            c = c if abs(c) > 1e-300 else 1e-300
            h *= d * c
    return front * h / a


def ratio(values: Sequence[float]) -> float:
    """Second arm over first: trick / baseline."""
    return float(values[1] / values[0])


def ratio_of_ratios(values: Sequence[float]) -> float:
    """(arm 1 / arm 0) / (arm 3 / arm 2): the harness's speed-up over the plain loop's."""
    return float((values[1] / values[0]) / (values[3] / values[2]))
