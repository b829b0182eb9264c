"""A wall-time estimate printed before the first run starts, from a reference machine's measured pace.

Nothing about this machine is known before a run has finished, so the estimate rests on what the
harness measured on the project's reference machine, a 2-core AMD EPYC CPU (2026-11-29, the run behind
``reports/example-cpu-every-trick-every-workload/``, idle): each built-in workload's baseline pace and
the seconds that the tricks with a fixed cost add to a run. It is printed as such ("at the reference
CPU's pace"), only for CPU runs of built-in workloads, and the per-run progress lines replace it with
this machine's own pace as soon as the first run is done. A GPU run or an imported module gets no
estimate before its first run: no reference pace would mean anything there.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.spec import RunSpec

REFERENCE_CPU = "this project's 2-core reference CPU"

# workload -> (baseline training samples/s, the rest of a run in seconds: setup, validation, test,
# checkpoints), medians of 3 repeats on the reference CPU
CPU_PACE: dict[str, tuple[float, float]] = {
    "autoencoder": (53_000.0, 1.1),
    "cnn": (1_600.0, 0.7),
    "transformer": (770.0, 0.4),
}

# trick -> workload -> seconds a run of it adds to the baseline's on the reference CPU, for the tricks
# whose cost is not a training speed: compiling, the finders' searches, early stopping's and SWA's
# longer runs. (A trick's effect on the training speed is what the run measures; it is left out.)
CPU_EXTRA_S: dict[str, dict[str, float]] = {
    "compile": {"autoencoder": 12.7, "cnn": 22.0, "transformer": 30.7},
    "batch-size-finder": {"autoencoder": 2.5, "cnn": 2.3, "transformer": 2.7},
    "lr-finder": {"autoencoder": 0.4, "cnn": 3.3, "transformer": 8.8},
    "early-stopping": {"autoencoder": 1.8, "cnn": 4.1, "transformer": 6.8},
    "swa": {"autoencoder": 0.0, "cnn": 3.9, "transformer": 7.9},
}

# once per invocation: the fork server's imports (3.2 s measured) and the report with its plots
INVOCATION_S = 3.2 + 8.0


def run_seconds(spec: RunSpec, train_samples: int) -> float | None:
    """One run's seconds at the reference CPU's pace, or None when no reference applies to it
    (``train_samples``: the workload's training samples per epoch)."""
    pace = CPU_PACE.get(spec.workload)
    if spec.accelerator != "cpu" or pace is None or spec.devices != 1:
        return None
    samples_per_s, rest_s = pace
    samples = train_samples * max(1, spec.max_epochs)
    if spec.max_steps > 0:
        samples = min(samples, spec.max_steps * spec.batch_size)
    extra = sum(CPU_EXTRA_S.get(trick, {}).get(spec.workload, 0.0) for trick in spec.tricks)
    return samples / samples_per_s + rest_s + extra


def estimate_seconds(specs: Sequence[RunSpec]) -> float | None:
    """The whole invocation's seconds at the reference CPU's pace; None when a run has no reference."""
    from harness.workload import WORKLOADS

    total = INVOCATION_S
    for spec in specs:
        if spec.workload not in CPU_PACE:
            return None
        workload = WORKLOADS.get(spec.workload).from_params(spec.workload_params)
        seconds = run_seconds(spec, workload.train_samples(spec.dataset, spec.synthetic_size))
        if seconds is None:
            return None
        total += seconds
    return total


def estimate_text(specs: Sequence[RunSpec]) -> str:
    """``about 3 min at the pace of ...`` or why there is no estimate yet."""
    seconds = estimate_seconds(specs)
    if seconds is None:
        return "no estimate before the first run (a reference pace exists only for built-in workloads on one CPU process)"
    when = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"about {when} at the pace of {REFERENCE_CPU} (harness/measuring/estimate.py); each finished run re-estimates from this machine's pace"
