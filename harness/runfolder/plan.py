"""Expand what the user asked for into RunSpecs: (workload x accelerator x repeat) x (baseline + tricks).

Repeats are interleaved rather than grouped, so that slow drift of the machine (thermal, other load)
spreads over every row instead of biasing the rows that happened to run last. Within one repeat the
order of the baseline and the tricks is shuffled (``order_seed``, the run's ``--seed``): with the
baseline always first, whatever the first process of a repeat pays (a cold page cache, a neighbour
that has not settled) would be charged to the baseline and read as every trick's speed-up. The
shuffled order is the order of plan.json, which ``resume`` follows, so a resumed run keeps it.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError, unknown_name_error
from harness.registry import LIST_HINT
from harness.spec import BASELINE, COMBINE, RunSpec, path_safe
from harness.trick import TRICKS, check_combination
from harness.workload import WORKLOADS


@dataclass(frozen=True)
class RunOptions:
    """The run-wide settings shared by every RunSpec of one invocation."""

    dataset: str
    dataset_reason: str
    data_dir: str
    loader: str
    batch_size: int
    lr: float
    max_epochs: int
    max_steps: int
    seed: int
    block_steps: int
    warmup_blocks: int
    synthetic_size: int
    num_workers: int
    limit_val_batches: float | int = 1.0
    limit_test_batches: float | int = 1.0
    datamodule: str = ""
    init_args: dict[str, Any] = field(default_factory=dict)
    datamodule_args: dict[str, Any] = field(default_factory=dict)
    monitor: str = "val_loss"
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    checkpoints: bool = True
    profiler: str = ""
    weight_histograms: bool = False


def parse_tricks(selection: str) -> list[list[str]]:
    """``all``, globs, comma lists and ``a+b`` combinations -> a list of trick-name lists.

    ``baseline`` may be named but is always run anyway; ``none`` selects no trick (baseline only).
    """
    runs: list[list[str]] = []
    for item in (part.strip() for part in selection.split(",")):
        if not item or item in (BASELINE, "none"):
            continue
        if COMBINE in item:
            names = [name.strip() for name in item.split(COMBINE)]
            for name in names:
                TRICKS.get(name)
            if len(set(names)) != len(names):
                raise UserError(f"combination {item!r} names a trick twice")
            combo = names
            if combo not in runs:
                runs.append(combo)
            continue
        for name in TRICKS.select(item):
            if [name] not in runs:
                runs.append([name])
    return runs


@dataclass(frozen=True)
class Params:
    """``--param`` values split by owner: trick name -> its fields, workload name -> its fields."""

    tricks: dict[str, dict[str, str]]
    workloads: dict[str, dict[str, str]]


def parse_params(pairs: list[str]) -> Params:
    """``["grad-clipping.value=0.5", "transformer.d_model=512"]`` -> values per trick and per workload.

    NAME is a trick or a workload; every value is converted and checked here, before anything runs.
    """
    tricks: dict[str, dict[str, str]] = {}
    workloads: dict[str, dict[str, str]] = {}
    for pair in pairs:
        match = re.fullmatch(r"\s*([\w-]+)\.(\w+)\s*=(.*)", pair)
        if not match:
            raise UserError(
                f"--param {pair!r} is not of the form NAME.PARAMETER=VALUE (e.g. grad-clipping.value=0.5)"
            )
        name, key, value = match.group(1), match.group(2), match.group(3).strip()
        if name in TRICKS.names():
            tricks.setdefault(name, {})[key] = value
        elif name in WORKLOADS.names():
            workloads.setdefault(name, {})[key] = value
        else:
            raise unknown_name_error("trick or workload", name, [*TRICKS.names(), *WORKLOADS.names()], LIST_HINT)
    for name, values in tricks.items():
        TRICKS.get(name).from_params(values)  # raises UserError on a bad name or value
    for name, values in workloads.items():
        WORKLOADS.get(name).from_params(values)
    return Params(tricks, workloads)


def check_trick_runs(trick_runs: list[list[str]], trick_params: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Check every combination with its parameters before anything runs: label -> its warnings.

    A refused combination raises UserError (exit 2, no run started); the worker repeats the same
    check and records the warnings in the row's ``details["warnings"]``.
    """
    warnings: dict[str, list[str]] = {}
    for names in trick_runs:
        tricks = [TRICKS.get(name).from_params(trick_params.get(name, {})) for name in names]
        found = check_combination(tricks)
        if found:
            warnings[COMBINE.join(names)] = found
    return warnings


AUTO_EPOCHS = 3  # --max-epochs auto, for a workload without a sample budget


def epochs_for(workload: str, options: RunOptions, workload_params: dict[str, str] | None = None) -> int:
    """``--max-epochs``, or for ``auto`` (0) enough epochs of the workload's dataset for its sample budget
    (``Workload.auto_train_samples``), at least AUTO_EPOCHS; an imported workload gets AUTO_EPOCHS."""
    if options.max_epochs > 0:
        return options.max_epochs
    if ":" in workload:
        return AUTO_EPOCHS
    kind = WORKLOADS.get(workload)
    if kind.auto_train_samples is None:
        return AUTO_EPOCHS
    per_epoch = kind.from_params(workload_params or {}).train_samples(options.dataset, options.synthetic_size)
    return max(AUTO_EPOCHS, math.ceil(kind.auto_train_samples / max(1, per_epoch)))


def plan_runs(
    trick_runs: list[list[str]],
    workloads: list[str],
    accelerators: list[str],
    repeats: int,
    options: RunOptions,
    trick_params: dict[str, dict[str, str]],
    run_dir: str,
    workload_params: dict[str, dict[str, str]] | None = None,
    order_seed: int | None = None,
) -> list[RunSpec]:
    """The RunSpecs in the order they run. ``order_seed``: shuffle baseline and tricks within each
    repeat with a generator seeded from it, the workload, the accelerator and the repeat (None: the
    baseline first, the tricks as given)."""
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    specs = []
    for workload in workloads:
        for accelerator in accelerators:
            for repeat in range(repeats):
                arms = [[], *trick_runs]
                if order_seed is not None:
                    random.Random(f"{order_seed}/{workload}/{accelerator}/{repeat}").shuffle(arms)
                for tricks in arms:
                    label = COMBINE.join(tricks) or BASELINE
                    fields = {**vars(options), "max_epochs": epochs_for(workload, options, (workload_params or {}).get(workload))}
                    specs.append(
                        RunSpec(
                            run_id=f"{path_safe(workload)}-{accelerator}-{label}-r{repeat}",
                            label=label,
                            tricks=tricks,
                            trick_params={name: trick_params[name] for name in tricks if name in trick_params},
                            workload=workload,
                            workload_params=(workload_params or {}).get(workload, {}),
                            accelerator=accelerator,
                            repeat=repeat,
                            run_dir=run_dir,
                            **fields,
                        )
                    )
    return specs
