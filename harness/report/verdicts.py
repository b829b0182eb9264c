"""Verdicts: "should I turn this trick on here?" answered per trick, with its evidence and uncertainty.

A pure function (no I/O) from a run's pooled rows to one :class:`Verdict` per (workload, dataset,
accelerator, trick label), each judged against the baseline of the same group. Three axes:

- **speed**: the throughput ratio trick/baseline with a 95% interval from *between-run* variation
  (``harness.measuring.stats.paired_interval``: trick and baseline paired by repeat, Student-t on the log of
  the per-repeat ratios). A speed effect counts only when the whole interval lies outside the
  practical band 1/1.1..1.1 (asv's factor 1.1); "no speed effect" only when the whole interval lies
  inside it; an interval that straddles a band edge is "cannot tell". One repeat knows nothing of
  how runs disagree: it gives a call only when its (blocks-only) interval lies wholly beyond 1.5x
  either way, far outside the run-to-run noise measured on this project's machines.
- **memory**: the peak-memory ratio, with the same interval; within 5% (CPU max RSS: the whole
  process, torch included) or 2% (GPU allocator peak) of 1.00 is "no measurable change".
- **quality**: the final val loss (test loss when there is none) against the baseline's, with a
  tolerance of 5% (or the repeats' interval, when it is wider); and time to target, the tune + fit
  time until the baseline's final val loss is reached (``harness.report.target``). A trick that
  changes the budget (``Trick.changes_budget``: SWA, early stopping, the finders) is judged on time
  to target and final loss, not on samples/s.

A run whose timed window is too short (under 10 kept blocks or 1 s of timed training) gives no
speed ratio but "cannot tell" with the budget that would settle it. Every verdict line names the
numbers it rests on; see the README's "Verdicts" section for the categories.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from harness.measuring.stats import Interval, paired_interval, ratio, student_t_quantile
from harness.report.devices import with_devices
from harness.report.target import default_targets, final_val_loss, time_to_target
from harness.spec import BASELINE, COMBINE, Result

GROUP = ("workload", "dataset", "accelerator", "device_name")  # the same device only (harness.report.devices)

SPEED_BAND = 1.1  # a speed (or time-to-target) change smaller than 10% is no practical effect (asv's factor)
SINGLE_REPEAT_FACTOR = 1.5  # one repeat: a call only beyond this, far outside run-to-run noise
MEMORY_BAND = {"max_rss": 1.05, "cuda_max_allocated": 1.02}  # peak memory within this of 1.00: no change
DEFAULT_MEMORY_BAND = 1.05
LOSS_TOLERANCE = 0.05  # val loss within 5% of the baseline's: the same quality
MIN_BLOCKS = 10  # kept timing blocks per run below which a run's throughput is not judged
MIN_SECONDS = 1.0  # seconds of timed training per run below which a run's throughput is not judged
CONTENTION_MARK = "other processes used"  # the start of harness.measuring.contention's warning

# the overall calls; a failed or skipped trick gets its status as its category
TURN_ON, TURN_ON_IF, NO_GAIN, HURTS, CANNOT_TELL = "turn on", "turn on if", "no gain here", "hurts here", "cannot tell"
CATEGORIES = (TURN_ON, TURN_ON_IF, NO_GAIN, HURTS, CANNOT_TELL, "skipped", "failed")


@dataclass
class Axis:
    """One axis's judgement: a call word, the ratio with its interval, and the words that show it."""

    call: str  # speed: faster/slower/same/unclear/short/none; memory: lower/higher/same/unclear/none;
    #            quality: better/worse/same/unclear/none; to target: sooner/later/same/never/unclear/short/none
    ratio: float = math.nan
    low: float = math.nan
    high: float = math.nan
    text: str = ""
    settle: str = ""  # what would settle an "unclear" or "short" call


@dataclass
class Verdict:
    workload: str
    dataset: str
    accelerator: str
    trick: str
    category: str  # one of CATEGORIES
    call: str  # the category with its condition: "turn on if memory is your limit"
    text: str  # the call and the evidence, e.g. "turn on: 1.38x throughput (95% CI 1.31-1.45, 3 repeats), ..."
    judged_on: str  # "throughput" or "time to target" (budget-changing tricks), "" for a skipped/failed trick
    repeats: int = 0
    speed: Axis = field(default_factory=lambda: Axis("none"))
    memory: Axis = field(default_factory=lambda: Axis("none"))
    quality: Axis = field(default_factory=lambda: Axis("none"))
    to_target: Axis = field(default_factory=lambda: Axis("none"))
    contention: int = 0  # the trick's and baseline's runs that carried a contention warning
    device: str = ""  # the device name both sides ran on: a trick is never judged against another device's baseline

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.workload, self.dataset, self.accelerator, self.device, self.trick)

    def line(self, width: int = 0) -> str:
        return f"{self.trick:<{width}}  {self.text}"


# ------------------------------------------------------------------------------------------------
# the function


def judge(
    results: Iterable[Result],
    changes_budget: Collection[str] | Callable[[str], bool] | None = None,
    target_val_loss: float | None = None,
    helps_when: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """One verdict per trick label and group (groups in first-seen order, labels sorted; no baseline row).

    ``changes_budget``: the trick names (or a predicate on a name) that change the budget; a label
    ``a+b`` changes it when any of its tricks does. None: ask each trick class (``Trick.changes_budget``).
    ``target_val_loss``: the target of time to target; None: each group's baseline final val loss.
    ``helps_when``: trick name -> the condition under which it pays beyond what a run shows
    (``Trick.helps_when``); None: ask each trick class when ``changes_budget`` is None too, else none.
    """
    results = with_devices(results)
    budget = _budget_predicate(changes_budget)
    if helps_when is None:
        helps_when = _registry_conditions(results) if changes_budget is None else {}
    targets = default_targets(results)
    verdicts = []
    groups: dict[tuple[str, str, str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.workload, result.dataset, result.accelerator, result.device_name), []).append(result)
    for key, rows in groups.items():
        baseline = _by_repeat([r for r in rows if r.trick == BASELINE])
        target = target_val_loss if target_val_loss is not None else targets.get(key)
        for label in sorted({r.trick for r in rows} - {BASELINE}):  # the runs ran shuffled: a stable order
            runs = [r for r in rows if r.trick == label]
            uses_budget = any(budget(name) for name in label.split(COMBINE))
            verdict = _judge_trick(key, label, runs, baseline, target, uses_budget)
            verdict.device = key[3]
            conditions = [helps_when[name] for name in label.split(COMBINE) if helps_when.get(name)]
            if verdict.category == NO_GAIN and conditions:
                verdict.category, verdict.call = TURN_ON_IF, f"turn on if {' or '.join(conditions)}"
                verdict.text = verdict.call + ": no gain in this run" + verdict.text.removeprefix(NO_GAIN)
            verdicts.append(verdict)
    return verdicts


def _budget_predicate(changes_budget: Collection[str] | Callable[[str], bool] | None) -> Callable[[str], bool]:
    if callable(changes_budget):
        return changes_budget
    if changes_budget is not None:
        names = frozenset(changes_budget)
        return lambda name: name in names

    def from_registry(name: str) -> bool:
        from harness.errors import UserError
        from harness.trick import TRICKS

        try:
            return bool(getattr(TRICKS.get(name), "changes_budget", False))
        except UserError:  # a trick not registered here (a plugin of the machine that ran it)
            return False

    return from_registry


def _registry_conditions(results: Sequence[Result]) -> dict[str, str]:
    from harness.errors import UserError
    from harness.trick import TRICKS

    out = {}
    for name in {name for r in results for name in r.trick.split(COMBINE)} - {BASELINE}:
        try:
            condition = getattr(TRICKS.get(name), "helps_when", "")
        except UserError:
            continue
        if condition:
            out[name] = condition
    return out


def _by_repeat(runs: Sequence[Result]) -> dict[int, Result]:
    """The ok run of each repeat (the last one when a resume or retry left several)."""
    out: dict[int, Result] = {}
    for run in runs:
        if run.status == "ok":
            out[run.repeat] = run
    return out


def _judge_trick(
    key: tuple[str, str, str, str], label: str, runs: list[Result], baseline: dict[int, Result],
    target: float | None, uses_budget: bool,
) -> Verdict:
    workload, dataset, accelerator, device = key
    trick = _by_repeat(runs)
    if not trick:
        status = runs[-1].status if runs else "failed"
        reasons = "; ".join(dict.fromkeys(r.reason for r in runs if r.reason)) or "no reason recorded"
        status = status if status in ("skipped", "failed") else "failed"
        return Verdict(workload, dataset, accelerator, label, status, status, f"{status}: {reasons}", "")
    if not baseline:
        return Verdict(workload, dataset, accelerator, label, CANNOT_TELL, CANNOT_TELL,
                       f"cannot tell: no baseline run on this device ({device or 'unnamed'}) finished to compare with", "",
                       repeats=len(trick))
    repeats = sorted(set(trick) & set(baseline))
    if not repeats:  # a resume that finished different repeats: pair what there is in order
        pairs = list(zip((baseline[r] for r in sorted(baseline)), (trick[r] for r in sorted(trick))))
    else:
        pairs = [(baseline[r], trick[r]) for r in repeats]
    contention = sum(1 for pair in pairs for run in pair if _contended(run))
    speed = speed_axis(pairs)
    memory = memory_axis(pairs)
    quality = quality_axis(pairs)
    to_target = to_target_axis(pairs, target)
    if uses_budget:
        category, call = _call_budget(to_target, quality, _wall_ratio(pairs))
        judged_on = "time to target"
        evidence = [to_target.text, quality.text, _wall_text(pairs), memory.text]
        deciding = [to_target, quality]
    else:
        category, call = _call_speed(speed, quality, memory)
        judged_on = "throughput"
        evidence = [speed.text, memory.text, quality.text]
        deciding = [speed, quality]
    text = f"{call}: " + ", ".join(e for e in evidence if e)
    if category == CANNOT_TELL:
        settles = [a.settle for a in deciding if a.call in ("unclear", "short") and a.settle]
        if contention:
            settles.append("an idle machine")
        if _precision_on_cpu(pairs, accelerator):
            settles.append("a GPU (--accelerator gpu: reduced precision pays on GPUs)")
        if settles:
            text += "; to settle it: " + ", or ".join(dict.fromkeys(settles))
    if contention:
        text += f" (contention warnings on {contention} of {2 * len(pairs)} runs: timings not the runs' alone)"
    lost = [r for r in runs if r.status != "ok" and r.repeat not in trick]
    if lost:
        reasons = "; ".join(dict.fromkeys(r.reason for r in lost if r.reason))
        text += f" ({len(lost)} of {len(lost) + len(trick)} runs {lost[-1].status}{': ' + reasons if reasons else ''})"
    return Verdict(workload, dataset, accelerator, label, category, call, text, judged_on, len(pairs),
                   speed, memory, quality, to_target, contention)


# ------------------------------------------------------------------------------------------------
# the axes


def _blocks(run: Result) -> list[float]:
    if run.block_samples_per_s:
        return [float(x) for x in run.block_samples_per_s]
    return [float(run.samples_per_s)] if run.samples_per_s else []


def timed_seconds(run: Result) -> float:
    """Seconds of training inside the kept timing blocks, estimated as steps x the median time per step
    (Result records no block size; warm-up blocks make this a slight overestimate)."""
    if run.steps is None or run.step_time_ms is None:
        return math.nan
    return float(run.steps) * float(run.step_time_ms) / 1000.0


def _kept_blocks(run: Result) -> int:
    return len(run.block_samples_per_s) if run.block_samples_per_s else int(run.blocks_measured or 0)


def band_call(interval: Interval, band: float, up: str, down: str, single_factor: float = SINGLE_REPEAT_FACTOR) -> str:
    """``up``/``down`` when the whole interval lies beyond the band, "same" when it lies inside, else
    "unclear". One repeat (a blocks-only interval): only beyond ``single_factor``, never "same"."""
    if interval.blocks_only:
        if interval.low >= single_factor:
            return up
        if interval.high <= 1.0 / single_factor:
            return down
        return "unclear"
    if interval.low >= band:
        return up
    if interval.high <= 1.0 / band:
        return down
    if interval.low >= 1.0 / band and interval.high <= band:
        return "same"
    return "unclear"


def _ci(interval: Interval) -> str:
    what = f"{interval.repeats} repeats" if not interval.blocks_only else "1 repeat, blocks only"
    return f"95% CI {interval.low:.2f}-{interval.high:.2f}, {what}"


def _settle_repeats(interval: Interval, band: float) -> str:
    """What would narrow an interval that straddles the band: more repeats, estimated from its spread."""
    if interval.blocks_only:
        return "--repeats 3 (one repeat cannot show run-to-run noise)"
    n = interval.repeats
    half = (math.log(interval.high) - math.log(interval.low)) / 2.0
    spread = half * math.sqrt(n) / student_t_quantile(0.975, n - 1)  # the per-repeat log spread
    # the half-width that would settle an effect at this point, or one half-way inside the band
    margin = max(abs(abs(math.log(interval.value)) - math.log(band)), math.log(band) / 2.0)
    for more in range(n + 1, 31):
        if student_t_quantile(0.975, more - 1) * spread / math.sqrt(more) < margin:
            return f"about --repeats {more} (estimated from this spread)"
    return "over 30 repeats at this run-to-run spread: a quieter machine or a longer budget per run"


def speed_axis(pairs: Sequence[tuple[Result, Result]]) -> Axis:
    """Throughput trick/baseline, paired by repeat; "short" when a run's timed window is too short."""
    runs = [run for pair in pairs for run in pair]
    if any(not _blocks(run) for run in runs):
        return Axis("none", text="throughput: not measured")
    blocks = min(_kept_blocks(run) for run in runs)
    seconds = [timed_seconds(run) for run in runs]
    shortest = min((s for s in seconds if not math.isnan(s)), default=math.nan)
    if blocks < MIN_BLOCKS or (not math.isnan(shortest) and shortest < MIN_SECONDS):
        epochs = max((run.epochs or 1) for run in runs)
        scale = max(MIN_BLOCKS / max(blocks, 1), MIN_SECONDS / shortest if shortest and shortest > 0 else 1.0)
        more = max(epochs + 1, math.ceil(epochs * scale * 1.2))
        seconds_text = f", {shortest:.2f} s" if not math.isnan(shortest) else ""
        return Axis(
            "short",
            text=f"measured window too short for a throughput ratio ({blocks} blocks{seconds_text} per run)",
            settle=f"run with --max-epochs {more} (or a smaller --block-steps)",
        )
    interval = paired_interval([[_blocks(b) for b, _ in pairs], [_blocks(t) for _, t in pairs]], ratio)
    call = band_call(interval, SPEED_BAND, "faster", "slower")
    axis = Axis(call, interval.value, interval.low, interval.high)
    ci = _ci(interval)
    if call in ("faster", "slower"):
        axis.text = f"{interval.value:.2f}x throughput ({ci}): {call}"
    elif call == "same":
        axis.text = f"no speed effect ({interval.value:.2f}x, {ci}, within 1/{SPEED_BAND:g}-{SPEED_BAND:g}x)"
    else:
        axis.text = f"throughput {interval.value:.2f}x ({ci}) straddles the 1/{SPEED_BAND:g}-{SPEED_BAND:g}x band"
        axis.settle = _settle_repeats(interval, SPEED_BAND)
    return axis


def _value_interval(pairs: Sequence[tuple[Result, Result]], value: Callable[[Result], float | None]) -> Interval | None:
    """Trick/baseline of one number per run, paired by repeat (Student-t on the log ratios, or the point
    for one repeat); None when a run lacks it or it is not positive."""
    values = [(value(b), value(t)) for b, t in pairs]
    if any(v is None or not math.isfinite(v) or v <= 0 for pair in values for v in pair):
        return None
    if len(values) == 1:
        point = values[0][1] / values[0][0]
        return Interval(point, point, point, 1)
    return paired_interval([[[b] for b, _ in values], [[t] for _, t in values]], ratio)


def memory_axis(pairs: Sequence[tuple[Result, Result]]) -> Axis:
    interval = _value_interval(pairs, lambda r: float(r.peak_mem_bytes) if r.peak_mem_bytes else None)
    if interval is None:
        return Axis("none")
    band = MEMORY_BAND.get(pairs[0][0].mem_kind, DEFAULT_MEMORY_BAND)
    # memory is not a timing: one repeat's value is judged as is (the interval is the point)
    call = band_call(Interval(interval.value, interval.low, interval.high, max(interval.repeats, 2)), band, "higher", "lower")
    axis = Axis(call, interval.value, interval.low, interval.high)
    ci = f" (95% CI {interval.low:.2f}-{interval.high:.2f})" if interval.repeats > 1 and interval.high > interval.low else ""
    if call == "same":
        axis.text = f"peak memory no measurable change ({interval.value:.2f}x, within {band:g}x)"
    elif call == "unclear":
        axis.text = f"peak memory {interval.value:.2f}x{ci}, not clearly beyond {band:g}x"
    else:
        axis.text = f"peak memory {interval.value:.2f}x{ci}"
    return axis


def _loss(run: Result) -> float | None:
    for value in (run.val_loss, run.test_loss):
        if value is not None and math.isfinite(value):
            return float(value)
    return None


def quality_axis(pairs: Sequence[tuple[Result, Result]]) -> Axis:
    """Final val loss trick/baseline: "same" within the tolerance, better/worse when wholly beyond it."""
    interval = _value_interval(pairs, _loss)
    if interval is None:
        return Axis("none", text="")
    what = "val loss" if all(run.val_loss is not None for pair in pairs for run in pair) else "test loss"
    band = 1.0 + LOSS_TOLERANCE
    # a loss is not a timing: one repeat's value (same seed, same data) is judged as is
    call = band_call(Interval(interval.value, interval.low, interval.high, max(interval.repeats, 2)), band, "worse", "better")
    axis = Axis(call, interval.value, interval.low, interval.high)
    change = interval.value - 1.0
    ci = f", 95% CI {interval.low:.2f}-{interval.high:.2f}x" if interval.repeats > 1 and interval.high - interval.low > 1e-3 else ""
    if call == "same":
        axis.text = f"{what} same ({change:+.1%}{ci})"
    elif call == "worse":
        size = f"{interval.value:.1f}x" if interval.value >= 2 else f"{change:.1%} higher"
        axis.text = f"{what} {size} (worse){ci and ' (' + ci[2:] + ')'}"
    elif call == "better":
        axis.text = f"{what} {-change:.1%} lower (better){ci and ' (' + ci[2:] + ')'}"
    else:
        axis.text = f"{what} {change:+.1%} ({ci[2:]}): not clearly beyond ±{LOSS_TOLERANCE:.0%}"
        axis.settle = f"--repeats {2 * interval.repeats + 1}"
    return axis


def to_target_axis(pairs: Sequence[tuple[Result, Result]], target: float | None) -> Axis:
    """Time (tune + fit) to the target val loss, trick/baseline, paired by repeat."""
    if target is None or not math.isfinite(target):
        return Axis("none", text="")
    if any(not b.curve for b, _ in pairs):  # rows without validation points: nothing to time
        return Axis("none", text="")
    hits = [(time_to_target(b.curve, target, b.tune_s), time_to_target(t.curve, target, t.tune_s)) for b, t in pairs]
    if any(b is None for b, _ in hits):
        return Axis("none", text=f"the baseline did not reach the target val loss {target:.4g} in every repeat")
    missed = sum(1 for _, t in hits if t is None)
    if missed == len(hits):
        final = [final_val_loss(t) for _, t in pairs]
        final_text = f" (final {np.median([f for f in final if f is not None]):.4g})" if any(f is not None for f in final) else ""
        return Axis("never", ratio=math.inf,
                    text=f"never reached the baseline's val loss {target:.4g}{final_text} within the budget")
    if missed:
        return Axis("unclear", text=f"reached the target val loss {target:.4g} in {len(hits) - missed} of {len(hits)} repeats",
                    settle=f"--repeats {2 * len(hits) + 1}")
    base_s = [b.wall_s for b, _ in hits]
    if min(base_s) < MIN_SECONDS:
        return Axis("short", text=f"too short to time: the baseline reached its final val loss after {min(base_s):.2f} s",
                    settle="a longer budget (--max-epochs)")
    if len(hits) == 1:
        interval = Interval(hits[0][1].wall_s / hits[0][0].wall_s, math.nan, math.nan, 1)
        interval = Interval(interval.value, interval.value, interval.value, 1)
    else:
        interval = paired_interval([[[b.wall_s] for b, _ in hits], [[t.wall_s] for _, t in hits]], ratio)
    call = band_call(interval, SPEED_BAND, "later", "sooner")
    axis = Axis(call, interval.value, interval.low, interval.high)
    times = f"{np.median([t.wall_s for _, t in hits]):.1f} s vs {np.median(base_s):.1f} s"
    ci = "1 repeat" if interval.repeats == 1 else _ci(interval)
    if call == "same":
        axis.text = f"time to the baseline's val loss about the same ({interval.value:.2f}x, {ci})"
    elif call in ("sooner", "later"):
        axis.text = f"reached the baseline's val loss in {interval.value:.2f}x its time ({times}; {ci}): {call}"
    else:
        axis.text = f"time to the baseline's val loss {interval.value:.2f}x ({ci}) straddles the 1/{SPEED_BAND:g}-{SPEED_BAND:g}x band"
        axis.settle = _settle_repeats(interval, SPEED_BAND) if interval.repeats > 1 else "--repeats 3"
    return axis


def _wall_ratio(pairs: Sequence[tuple[Result, Result]]) -> float:
    ratios = [t.wall_s / b.wall_s for b, t in pairs if b.wall_s and t.wall_s]
    return float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan


def _wall_text(pairs: Sequence[tuple[Result, Result]]) -> str:
    value = _wall_ratio(pairs)
    return f"wall time {value:.2f}x" if math.isfinite(value) else ""


def _contended(run: Result) -> bool:
    warnings = run.details.get("warnings") if isinstance(run.details, dict) else None
    return isinstance(warnings, list) and any(isinstance(w, str) and CONTENTION_MARK in w for w in warnings)


def _precision_on_cpu(pairs: Sequence[tuple[Result, Result]], accelerator: str) -> bool:
    return accelerator == "cpu" and any("16" in (t.precision or "") for _, t in pairs)


# ------------------------------------------------------------------------------------------------
# the calls


def _call_speed(speed: Axis, quality: Axis, memory: Axis) -> tuple[str, str]:
    """The overall call of a trick judged on throughput, with its condition."""
    if quality.call == "worse":
        if speed.call == "faster":
            return TURN_ON_IF, f"turn on if a {quality.ratio - 1:+.1%} loss is acceptable for the speed"
        return HURTS, HURTS
    if speed.call == "slower":
        if quality.call == "better":
            return TURN_ON_IF, "turn on if the lower loss is worth the slower steps"
        if memory.call == "lower":
            return TURN_ON_IF, "turn on if memory is your limit"
        return HURTS, HURTS
    if speed.call == "faster":
        if quality.call in ("same", "better", "none"):
            return TURN_ON, TURN_ON
        return CANNOT_TELL, CANNOT_TELL
    if speed.call == "same":
        if quality.call == "better":
            return TURN_ON, TURN_ON
        if quality.call == "unclear":
            return CANNOT_TELL, CANNOT_TELL
        if memory.call == "lower":
            return TURN_ON_IF, "turn on if memory is your limit"
        return NO_GAIN, NO_GAIN
    return CANNOT_TELL, CANNOT_TELL  # unclear, short or not measured


def _call_budget(to_target: Axis, quality: Axis, wall: float) -> tuple[str, str]:
    """The overall call of a trick that changes the budget: time to target and final loss."""
    cheaper = math.isfinite(wall) and wall <= 1.0 / SPEED_BAND
    if to_target.call == "never" or quality.call == "worse":
        if cheaper:
            return TURN_ON_IF, f"turn on if a higher final loss is acceptable for {wall:.2f}x the wall time"
        if to_target.call == "sooner":
            return TURN_ON_IF, "turn on if you stop at the baseline's loss (the final loss is worse)"
        return HURTS, HURTS
    if to_target.call == "sooner":
        return TURN_ON, TURN_ON
    if to_target.call == "later":
        if quality.call == "better":
            return TURN_ON_IF, "turn on if the lower final loss is worth the time"
        return HURTS, HURTS
    if to_target.call == "same":
        if quality.call == "better":
            return TURN_ON, TURN_ON
        if quality.call == "unclear":
            return CANNOT_TELL, CANNOT_TELL
        return NO_GAIN, NO_GAIN
    if to_target.call == "none" and quality.call in ("better", "same"):  # no target to time: the loss alone
        return (TURN_ON, TURN_ON) if quality.call == "better" else (CANNOT_TELL, CANNOT_TELL)
    return CANNOT_TELL, CANNOT_TELL


# ------------------------------------------------------------------------------------------------
# rendering helpers (strings and frames; the pages decide where they go)


def by_group(verdicts: Sequence[Verdict]) -> dict[str, list[Verdict]]:
    """The verdicts per workload, accelerator, device and dataset, under the heading every page shows, in
    order; the device is named where a cell ran on more than one."""
    devices: dict[tuple[str, str, str], set[str]] = {}
    for v in verdicts:
        devices.setdefault((v.workload, v.dataset, v.accelerator), set()).add(v.device)
    groups: dict[str, list[Verdict]] = {}
    for v in verdicts:
        where = f"{v.accelerator} ({v.device or 'unnamed device'})" if len(devices[(v.workload, v.dataset, v.accelerator)]) > 1 else v.accelerator
        groups.setdefault(f"{v.workload} on {where}, dataset {v.dataset}", []).append(v)
    return groups


def verdict_lines(verdicts: Sequence[Verdict]) -> list[tuple[str, list[str]]]:
    """(group heading, its aligned verdict lines) per group, for report.md."""
    out = []
    for heading, rows in by_group(verdicts).items():
        width = max(len(v.trick) for v in rows)
        out.append((heading, [v.line(width) for v in rows]))
    return out


VERDICTS_INTRO = (
    "Each trick against the baseline of the same invocation. Speed: the throughput ratio with a 95% interval "
    "from the spread between repeats; an effect counts only when the whole interval lies outside 1/1.1-1.1x, "
    "and \"no speed effect\" only when it lies inside. Tricks that change the budget are judged on time to "
    "the baseline's val loss and the final loss."
)
# the HTML page's tag colour per category (fixed strings, never data)
_TAG_STYLE = {
    TURN_ON: "background:#dff3e4", TURN_ON_IF: "background:#eef6d8", NO_GAIN: "background:#eeeeee",
    HURTS: "background:#fbe3e1", CANNOT_TELL: "background:#fff3d6", "skipped": "background:#eeeeee",
    "failed": "background:#fbe3e1",
}


def verdicts_html(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as an HTML section; every piece of text escaped (trick names and reasons come from
    the run's files, which may be crafted)."""
    if not verdicts:
        return ""
    parts = ['<h2 id="verdicts">Verdicts</h2>', f"<p>{html.escape(VERDICTS_INTRO)}</p>"]
    for heading, rows in by_group(verdicts).items():
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        items = []
        for v in rows:
            style = _TAG_STYLE.get(v.category, "background:#eeeeee")
            items.append(
                f'<li><b>{html.escape(v.trick)}</b> <span style="{style};padding:0 .3rem">{html.escape(v.call)}</span>'
                f" {html.escape(v.text.removeprefix(v.call).removeprefix(':').strip())}</li>"
            )
        parts.append('<ul class="verdicts">' + "".join(items) + "</ul>")
    return "\n".join(parts)


def verdicts_text(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as plain text, for the top of the terminal output."""
    if not verdicts:
        return ""
    parts = ["Verdicts (each trick against the baseline of the same invocation: the call, then its evidence):"]
    for heading, rows in by_group(verdicts).items():
        width = max(len(v.trick) for v in rows)
        parts += ["", heading]
        for v in rows:  # wrapped under the call, so that a terminal or CI log reads it without scrolling
            parts += textwrap.wrap(
                v.text, width=TERMINAL_WIDTH, initial_indent=f"  {v.trick:<{width}}  ",
                subsequent_indent=" " * (width + 4), break_on_hyphens=False,
            )
    return "\n".join(parts)


TERMINAL_WIDTH = 100  # as the notes under the tables


VERDICT_COLUMNS = [
    "verdict_category", "verdict", "verdict_judged_on", "verdict_repeats",
    "speed_call", "speed_ratio", "speed_low", "speed_high",
    "memory_call", "memory_ratio", "memory_low", "memory_high",
    "quality_call", "loss_ratio", "loss_low", "loss_high",
    "to_target_call", "to_target_ratio", "to_target_low", "to_target_high",
]


def verdict_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per verdict: the keys, the category, the text and each axis's call, ratio and 95% bounds."""
    rows = []
    for v in verdicts:
        row = {"workload": v.workload, "dataset": v.dataset, "accelerator": v.accelerator, "device_name": v.device, "trick": v.trick,
               "verdict_category": v.category, "verdict": v.text, "verdict_judged_on": v.judged_on,
               "verdict_repeats": v.repeats}
        for name, axis in (("speed", v.speed), ("memory", v.memory), ("loss", v.quality), ("to_target", v.to_target)):
            call_name = "quality_call" if name == "loss" else f"{name}_call"
            row.update({call_name: axis.call, f"{name}_ratio": axis.ratio, f"{name}_low": axis.low, f"{name}_high": axis.high})
        rows.append(row)
    return pd.DataFrame(rows, columns=[*GROUP, "trick", *VERDICT_COLUMNS])


def with_verdicts(summary: pd.DataFrame, verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """The summary with the verdict columns joined on (workload, dataset, accelerator, device name, trick)."""
    if summary.empty:
        return summary
    frame = verdict_frame(verdicts)
    drop = [c for c in VERDICT_COLUMNS if c in summary.columns]
    return summary.drop(columns=drop).merge(frame, on=[*GROUP, "trick"], how="left")


def as_dict(verdict: Verdict) -> dict:
    return asdict(verdict)


# ------------------------------------------------------------------------------------------------
# two invocations (``compare``): no pairing by repeat across them


def between_runs_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Interval | None:
    """B/A of two invocations' run throughputs (each run: its kept blocks, or one value) with a 95% interval.

    The invocations ran at different times, so their repeats do not pair: Welch's t on the log of each
    run's median. A side with one run borrows the other side's run-to-run spread (a run-to-run
    spread from nothing is no spread); one run on both sides falls back to a bootstrap over their
    blocks, which knows nothing of run-to-run noise (``Interval.blocks_only``). None: nothing to
    build an interval from (one value on each side).
    """
    a = [list(run) for run in a if len(run)]
    b = [list(run) for run in b if len(run)]
    if not a or not b:
        return None
    la = np.log([float(np.median(run)) for run in a])
    lb = np.log([float(np.median(run)) for run in b])
    centre = float(lb.mean() - la.mean())
    if len(a) == 1 and len(b) == 1:
        if len(a[0]) < 2 or len(b[0]) < 2:
            return None
        return paired_interval([[a[0]], [b[0]]], ratio)
    va = float(la.var(ddof=1)) if len(la) > 1 else float(lb.var(ddof=1))
    vb = float(lb.var(ddof=1)) if len(lb) > 1 else float(la.var(ddof=1))
    se2 = va / len(la) + vb / len(lb)
    if len(la) > 1 and len(lb) > 1 and se2 > 0:
        df = se2**2 / ((va / len(la)) ** 2 / (len(la) - 1) + (vb / len(lb)) ** 2 / (len(lb) - 1))
    else:
        df = max(len(la), len(lb)) - 1
    half = student_t_quantile(0.975, max(1, int(math.floor(df)))) * math.sqrt(se2)
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), min(len(a), len(b)))


def contended(run: Result) -> bool:
    """Whether a row carries harness.measuring.contention's warning (other processes used the CPU during fit)."""
    return _contended(run)
