"""``python -m harness parity``: the harness against a plain PyTorch loop, for the baseline and per trick.

For the baseline: the share of plain PyTorch's throughput that the harness (Lightning included)
keeps. For each trick with a plain PyTorch equivalent (``--tricks``): the trick's speed-up and
peak-memory ratio measured through the harness next to the same change made in the plain loop, and
the ratio of the two speed-ups, the *fidelity*: 1.0 means the harness shows the trick's effect as a
hand-written loop would. Every process is fresh; within each repeat the processes run in a rotated
order (recorded in parity.json), so that no arm always runs first. Each repeat gives one value of
every ratio; the intervals come from how the repeats disagree (harness.measuring.stats.paired_interval).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import env
from harness.commands.options import add_training_arguments, new_run_dir, resolve_accelerators, run_options
from harness.errors import UserError
from harness.executors.runner import Launchers, launchers, run_one
from harness.measuring.stats import Interval, paired_interval, ratio, ratio_of_ratios
from harness.parity import PLAIN_LABEL, has_plain_equivalent
from harness.runfolder.plan import RunOptions, check_trick_runs, parse_params, parse_tricks, plan_runs
from harness.spec import BASELINE, COMBINE, Result, RunSpec
from harness.trick import TRICKS
from harness.workload import WORKLOADS

QUIET_SHARE = 0.15  # harness.measuring.contention.FOREIGN_WARN: above it a run's timings are not its own
WIDE_INTERVAL = 0.2  # a fidelity interval wider than this says little, even when it holds 1.0


@dataclass
class TrickParity:
    """One trick (or combination): its speed-up and memory ratio through the harness and in the plain loop."""

    label: str
    status: str = "ok"  # "ok", "skipped", "no plain equivalent" or "failed"
    reason: str = ""
    plain_changes: list[str] = field(default_factory=list)
    harness_speedup: Interval | None = None
    plain_speedup: Interval | None = None
    fidelity: Interval | None = None
    harness_mem_ratio: float | None = None
    plain_mem_ratio: float | None = None
    harness_samples_per_s: list[float] = field(default_factory=list)
    plain_samples_per_s: list[float] = field(default_factory=list)

    def within_noise(self, tolerance: float = 0.0) -> bool | None:
        """Whether the fidelity's interval reaches 1.0 (widened by ``tolerance``); None without one."""
        if self.fidelity is None:
            return None
        return self.fidelity.low <= 1.0 + tolerance and self.fidelity.high >= 1.0 - tolerance


@dataclass
class Parity:
    """The baseline's parity and every trick's, for one workload on one accelerator."""

    workload: str
    accelerator: str
    batch_size: int
    harness_samples_per_s: list[float] = field(default_factory=list)
    plain_samples_per_s: list[float] = field(default_factory=list)
    baseline: Interval | None = None  # harness / plain for the baseline, with its interval
    tricks: list[TrickParity] = field(default_factory=list)
    orders: list[list[str]] = field(default_factory=list)  # each repeat's order of processes
    foreign_cpu_shares: list[float] = field(default_factory=list)  # every process's contention reading
    warnings: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """median(harness) / median(plain): 1.0 means the harness costs nothing."""
        return statistics.median(self.harness_samples_per_s) / statistics.median(self.plain_samples_per_s)

    @property
    def quiet(self) -> bool:
        """No process of this measurement saw other processes take more than 15% of the CPUs."""
        return bool(self.foreign_cpu_shares) and max(self.foreign_cpu_shares) <= QUIET_SHARE

    def trick(self, label: str) -> TrickParity:
        return next(t for t in self.tricks if t.label == label)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tricks", default="none", help="tricks whose speed-up to compare with the plain loop's: names, globs, A+B, 'all' (default: none, the baseline only)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of runs, each in a rotated order (default: 3)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME.PARAM=VALUE", help="set a trick's or workload's parameter, e.g. grad-clipping.value=0.5 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder that receives the parity folder (default: reports/)")
    parser.add_argument("--quiet", action="store_true", help="no line per finished process")
    # ~400 steps per run in blocks of 10, 3 warm-up blocks: long enough that one slow stretch of a
    # shared machine does not decide the ratio (with 3 epochs it swung between 0.74 and 0.85 here)
    add_training_arguments(parser, batch_size=256, dataset="synthetic", max_epochs=10, warmup_blocks=3, synthetic_size=16384)


def measure_parity(
    options: RunOptions, workload: str, accelerator: str, repeats: int, run_dir: Path,
    workload_params: dict[str, dict[str, str]] | None = None,
    trick_runs: list[list[str]] | None = None,
    trick_params: dict[str, dict[str, str]] | None = None,
    timeout_s: float | None = None,
    progress: bool = False,
    isolation: str | None = None,
) -> Parity:
    """Run the baseline and each trick through the harness and through the plain loop, ``repeats``
    rounds, every process fresh. A failed baseline is an error; a failed trick is its row's status."""
    trick_runs = [names for names in (trick_runs or []) if names]
    specs = plan_runs(trick_runs, [workload], [accelerator], repeats, options, trick_params or {}, str(run_dir), workload_params)
    parity = Parity(workload, accelerator, options.batch_size)
    rows: dict[str, TrickParity] = {}
    for names in trick_runs:
        label = COMBINE.join(names)
        rows[label] = TrickParity(label)
        missing = [name for name in names if not has_plain_equivalent(TRICKS.get(name))]
        if missing:
            rows[label].status = "no plain equivalent"
            rows[label].reason = f"{', '.join(missing)}: no plain PyTorch form in the parity loop"
    parity.tricks = list(rows.values())
    results: dict[tuple[str, bool], list[Result]] = {}
    with launchers(isolation, run_dir) as using:
        _run_arms(parity, rows, results, specs, repeats, run_dir, timeout_s, progress, using)
    _summarise(parity, results)
    return parity


def _run_arms(
    parity: Parity, rows: dict[str, TrickParity], results: dict[tuple[str, bool], list[Result]], specs: list[RunSpec],
    repeats: int, run_dir: Path, timeout_s: float | None, progress: bool, using: Launchers,
) -> None:
    for repeat in range(repeats):
        arms = _arms([s for s in specs if s.repeat == repeat], rows, repeat, repeats)
        parity.orders.append([f"{'plain' if plain else 'harness'}:{spec.label}" for spec, plain in arms])
        for spec, plain in arms:
            row = rows.get(spec.label)
            if row is not None and row.status != "ok":  # skipped or failed in an earlier process: not again
                continue
            result = run_one(_plain_spec(spec) if plain else spec, run_dir, timeout_s=timeout_s, plain=plain, using=using)
            if progress:
                print(f"  {'plain  ' if plain else 'harness'} {spec.label:<24} r{repeat}: {_describe(result)}", file=sys.stderr)
            share = result.details.get("foreign_cpu_share")
            if share is not None:
                parity.foreign_cpu_shares.append(float(share))
            if row is None:
                _check_baseline(result)
            elif result.status != "ok" or not result.block_samples_per_s:
                row.status = result.status if result.status != "ok" else "failed"
                row.reason = f"{'plain loop' if plain else 'harness'}: {result.reason or 'no throughput measured'}"
                continue
            results.setdefault((spec.label, plain), []).append(result)


def _arms(specs: list[RunSpec], rows: dict[str, TrickParity], repeat: int, repeats: int) -> list[tuple[RunSpec, bool]]:
    """One repeat's processes: every spec through the harness and then the plain loop (tricks without
    a plain form: neither), rotated from repeat to repeat so that the first slot moves over the arms
    (two arms: they alternate, as the baseline-only parity always did)."""
    arms = [
        (spec, plain)
        for spec in specs
        if spec.label == BASELINE or rows[spec.label].status == "ok"
        for plain in (False, True)
    ]
    if not arms:
        return arms
    shift = (repeat * max(1, len(arms) // repeats)) % len(arms)
    return arms[shift:] + arms[:shift]


def _summarise(parity: Parity, results: dict[tuple[str, bool], list[Result]]) -> None:
    """Point estimates and intervals from the runs of every arm (the repeats each arm completed)."""
    harness_base, plain_base = results.get((BASELINE, False), []), results.get((BASELINE, True), [])
    parity.harness_samples_per_s = [r.samples_per_s for r in harness_base]
    parity.plain_samples_per_s = [r.samples_per_s for r in plain_base]
    parity.baseline = paired_interval([_blocks(plain_base), _blocks(harness_base)], ratio)
    for row in parity.tricks:
        harness, plain = results.get((row.label, False), []), results.get((row.label, True), [])
        if row.status != "ok":
            continue
        row.harness_samples_per_s = [r.samples_per_s for r in harness]
        row.plain_samples_per_s = [r.samples_per_s for r in plain]
        row.plain_changes = plain[0].details.get("plain_changes", []) if plain else []
        n = min(len(harness), len(plain), len(harness_base), len(plain_base))
        arms = [_blocks(harness_base[:n]), _blocks(harness[:n]), _blocks(plain_base[:n]), _blocks(plain[:n])]
        row.harness_speedup = paired_interval(arms[:2], ratio)
        row.plain_speedup = paired_interval(arms[2:], ratio)
        row.fidelity = paired_interval(arms, ratio_of_ratios)
        row.harness_mem_ratio = _memory_ratio(harness, harness_base)
        row.plain_mem_ratio = _memory_ratio(plain, plain_base)
    noisy = [share for share in parity.foreign_cpu_shares if share > QUIET_SHARE]
    if noisy:
        parity.warnings.append(
            f"{len(noisy)} of {len(parity.foreign_cpu_shares)} processes shared the machine (other processes took up to "
            f"{max(noisy):.0%} of the CPUs): the figures are not the loops' alone; rerun on an idle machine"
        )


def _blocks(runs: list[Result]) -> list[list[float]]:
    return [list(r.block_samples_per_s) for r in runs]


def _memory_ratio(trick: list[Result], baseline: list[Result]) -> float | None:
    peaks = [r.peak_mem_bytes for r in trick if r.peak_mem_bytes]
    base = [r.peak_mem_bytes for r in baseline if r.peak_mem_bytes]
    return statistics.median(peaks) / statistics.median(base) if peaks and base else None


def _plain_spec(spec: RunSpec) -> RunSpec:
    """The same spec under its own id, so that logs and result files do not collide."""
    return replace(spec, run_id=f"{spec.run_id}-{PLAIN_LABEL}")


def _check_baseline(result: Result) -> None:
    if result.status != "ok" or not result.samples_per_s:
        raise UserError(f"parity run {result.run_id} {result.status}: {result.reason or 'no throughput measured'}")


def _describe(result: Result) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.reason}"
    share = result.details.get("foreign_cpu_share")
    busy = f", others used {share:.0%} of the CPUs" if share is not None else ""
    return f"{result.samples_per_s:,.0f} samples/s{busy}"


def render_table(parity: Parity) -> str:
    """The per-trick table in Markdown (the terminal prints the same text)."""
    lines = [
        f"### {parity.workload} on {parity.accelerator}, batch {parity.batch_size}",
        "",
        f"Baseline: harness {statistics.median(parity.harness_samples_per_s):,.0f} samples/s, plain PyTorch "
        f"{statistics.median(parity.plain_samples_per_s):,.0f} samples/s: the harness keeps "
        f"{parity.baseline.describe() if parity.baseline else 'n/a'} of plain PyTorch's throughput.",
        "",
    ]
    if parity.tricks:
        lines += [
            "| trick | plain PyTorch equivalent | speed-up, harness | speed-up, plain | fidelity (harness / plain) | memory, harness | memory, plain |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in parity.tricks:
            if row.status != "ok":
                lines.append(f"| {row.label} | {row.status}: {row.reason} | | | | | |")
                continue
            lines.append(
                f"| {row.label} | {'; '.join(row.plain_changes)} | {_interval(row.harness_speedup)} | {_interval(row.plain_speedup)} "
                f"| {_interval(row.fidelity)} {_fidelity_word(row)} | {_times(row.harness_mem_ratio)} | {_times(row.plain_mem_ratio)} |"
            )
        lines += [
            "",
            "Speed-up: trick / baseline samples/s (geometric mean over repeats of each repeat's ratio); fidelity: the "
            "harness's speed-up over the plain loop's; brackets: 95% t interval over the repeats (one repeat: over its "
            "blocks only, which cannot tell). "
            "Memory: peak memory, trick / baseline (CPU: the process's max RSS; GPU: max allocated).",
        ]
    lines += [f"\nWarning: {warning}" for warning in parity.warnings]
    return "\n".join(lines) + "\n"


def _interval(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return f"{interval.value:.2f}x [{interval.low:.2f}-{interval.high:.2f}]"


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None and math.isfinite(value) else ""


def _fidelity_word(row: TrickParity) -> str:
    """What the fidelity interval supports, in words; never more than it supports."""
    fidelity = row.fidelity
    if fidelity is None:
        return ""
    if fidelity.blocks_only:
        return "(cannot tell: 1 repeat, run-to-run noise unknown; use --repeats 3)"
    if not row.within_noise():
        return "(1.0 outside the interval: the harness shows a different effect)"
    if fidelity.high - fidelity.low > WIDE_INTERVAL:
        return f"(cannot tell: the interval is wider than {WIDE_INTERVAL:.0%}; more --repeats or a quieter machine)"
    return "(1.0 inside: faithful within noise)"


def parity_json(parity: Parity) -> dict[str, Any]:
    data = asdict(parity)
    data["ratio"] = parity.ratio
    data["quiet"] = parity.quiet
    for row, raw in zip(parity.tricks, data["tricks"]):
        raw["within_noise"] = row.within_noise()
    return data


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    params = parse_params(args.param)
    trick_runs = parse_tricks(args.tricks)
    check_trick_runs(trick_runs, params.tricks)
    workloads = WORKLOADS.select(args.workload)
    imported = [w for w in workloads if ":" in w]
    if imported:
        raise UserError(
            f"parity needs a built-in workload's plain PyTorch loss; {imported[0]!r} is an imported LightningModule "
            f"(built-in: {', '.join(WORKLOADS.names())})"
        )
    accelerators = resolve_accelerators(args.accelerator)
    options = run_options(args)
    run_dir = new_run_dir(args.out, prefix="parity")
    report: dict[str, Any] = {"env": {**env.collect(), "isolation": args.isolation}, "results": []}
    tables = []
    for workload in workloads:
        for accelerator in accelerators:
            parity = measure_parity(
                options, workload, accelerator, args.repeats, run_dir, params.workloads, trick_runs, params.tricks,
                timeout_s=args.timeout, progress=not args.quiet, isolation=args.isolation,
            )
            report["results"].append(parity_json(parity))
            tables.append(render_table(parity))
            print(tables[-1])
    (run_dir / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "parity.md").write_text("# Parity with plain PyTorch\n\n" + "\n".join(tables))
    print(f"Parity: {run_dir / 'parity.md'} and parity.json", file=sys.stderr)
    return 0
