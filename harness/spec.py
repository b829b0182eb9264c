"""RunSpec and Result: the plain, JSON-serialisable records that cross the process boundary.

The parent plans RunSpecs, a child process turns one RunSpec into one Result, and results.jsonl
holds one Result per line. Keeping both as flat dataclasses means a run can be replayed or
re-reported from its files alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "baseline"
COMBINE = "+"


def path_safe(name: str) -> str:
    """A workload name as file and folder names use it: ``mypkg.models:MyModule`` -> ``mypkg.models.MyModule``
    (':' is not allowed in Windows file names and means a host to scp and rsync)."""
    return name.replace(":", ".")


@dataclass
class RunSpec:
    """Everything a child process needs to run one baseline or trick run, and nothing else."""

    run_id: str
    label: str  # "baseline", "grad-clipping", "bf16-mixed+grad-clipping"
    tricks: list[str]
    trick_params: dict[str, dict[str, str]]
    workload: str
    dataset: str
    dataset_reason: str
    data_dir: str
    loader: str  # "device" or "dataloader"
    accelerator: str  # "cpu" or "gpu"
    batch_size: int
    lr: float
    max_epochs: int
    max_steps: int  # -1: no step limit
    seed: int
    repeat: int
    block_steps: int
    warmup_blocks: int
    synthetic_size: int
    num_workers: int
    run_dir: str
    limit_val_batches: float | int = 1.0
    limit_test_batches: float | int = 1.0
    workload_params: dict[str, str] = field(default_factory=dict)  # --param WORKLOAD.FIELD=VALUE
    # an imported workload (``--workload pkg.mod:Class``): its datamodule path and constructor arguments
    datamodule: str = ""  # --datamodule pkg.mod:Class
    init_args: dict[str, Any] = field(default_factory=dict)  # --init-args, for the module
    datamodule_args: dict[str, Any] = field(default_factory=dict)  # --datamodule-args
    monitor: str = "val_loss"  # --monitor: the validation metric early stopping and checkpoints watch
    # scale-out, passed through to the Trainer: devices per node, strategy, nodes
    devices: int = 1
    strategy: str = "auto"
    num_nodes: int = 1
    checkpoints: bool = True  # best.ckpt and last.ckpt under <run_dir>/checkpoints/<run_id>/
    profiler: str = ""  # "", "simple", "advanced" or "pytorch": Lightning's profiler, output under profiles/
    weight_histograms: bool = False  # parameter histograms to TensorBoard at each epoch end
    resume_from: str = ""  # a checkpoint that fit continues from (``harness resume``), relative to run_dir

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass
class Result:
    """One row of the comparison table. ``details`` is where tricks record what they did."""

    run_id: str
    trick: str
    workload: str
    dataset: str
    accelerator: str
    repeat: int
    status: str  # "ok", "skipped" or "failed"
    reason: str = ""
    device_name: str = ""
    host: str = ""  # the machine the run's process ran on (a Ray sweep spreads runs over nodes)
    precision: str = ""
    batch_size: int | None = None
    loader: str = ""
    samples_per_s: float | None = None
    samples_per_s_iqr: float | None = None
    step_time_ms: float | None = None
    noisy: bool | None = None
    peak_mem_bytes: int | None = None  # per process: the largest over the ranks when world_size > 1
    # "max_rss_fit" (CPU: the process's RSS high-water mark since fit began), "max_rss" (CPU, since the
    # process began: where the mark cannot be reset) or "cuda_max_allocated"
    mem_kind: str = ""
    train_loss: float | None = None
    val_loss: float | None = None
    test_loss: float | None = None
    wall_s: float | None = None
    fit_s: float | None = None
    tune_s: float = 0.0
    compile_s: float | None = None  # torch.compile: the first training step's time minus the steady step time
    steps: int | None = None  # training batches run
    optimizer_steps: int | None = None
    epochs: int | None = None
    blocks_measured: int | None = None
    block_samples_per_s: list[float] = field(default_factory=list)  # the kept blocks, for pooling repeats
    flops_per_sample: float | None = None  # forward + backward of the training loss, measure_flops
    flops_per_s: float | None = None  # achieved, at the measured samples/s
    mfu: float | None = None  # flops_per_s / dense peak of the GPU for the precision used; None on CPU
    seed: int | None = None
    world_size: int = 1  # processes that trained together (devices x nodes); samples/s is their sum
    strategy: str = ""
    isolation: str = ""  # how the run got its process: "fork" (from the pre-imported server) or "spawn"
    # checkpoint name ("best", "last", "final") -> path relative to the run folder
    checkpoints: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    # one point per validation during fit: epoch, step, samples, train_s, fit_s, val_loss
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=True)

    @classmethod
    def for_spec(cls, spec: RunSpec, status: str, **fields: Any) -> Result:
        """The row of ``spec``: its identity (run id, label, workload, dataset, accelerator, repeat, seed,
        requested batch size) and ``status``, plus ``fields``."""
        identity: dict[str, Any] = dict(
            run_id=spec.run_id, trick=spec.label, workload=spec.workload, dataset=spec.dataset,
            accelerator=spec.accelerator, repeat=spec.repeat, seed=spec.seed, batch_size=spec.batch_size,
        )
        return cls(status=status, **{**identity, **fields})

    @classmethod
    def from_json_file(cls, path: Path) -> Result:
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Result:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in row.items() if key in known})


def add_warning(details: dict[str, Any], text: str) -> None:
    """Record a warning in a row's ``details["warnings"]`` (a list), once. (Tricks import it from harness.trick.)"""
    warnings = details.setdefault("warnings", [])
    if text not in warnings:
        warnings.append(text)


REQUIRED_ROW_KEYS: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "trick": str, "workload": str, "dataset": str, "accelerator": str, "repeat": int, "status": str,
}
ROW_CONTAINERS = {"checkpoints": dict, "details": dict, "curve": list}
_warned: set[tuple[str, tuple[int, ...]]] = set()  # (file, bad line numbers) already named on stderr


def matches_type(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a RunSpec field's annotation (bool is not an int; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(matches_type(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            matches_type(key, args[0]) and matches_type(item, args[1]) for key, item in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint)


def row_problem(row: Any) -> str:
    """Why a parsed line is not a Result ('' when it is): not an object, a required key missing or of
    the wrong type, or a container field of the wrong kind (readers index them without checking)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for key, kind in REQUIRED_ROW_KEYS.items():
        if key not in row:
            return f"no {key!r}"
        if not isinstance(row[key], kind) or isinstance(row[key], bool):
            return f"{key!r} is a {type(row[key]).__name__}"
    for key, kind in ROW_CONTAINERS.items():
        if key in row and not isinstance(row[key], kind):
            return f"{key!r} is a {type(row[key]).__name__}"
    for key, hint in _row_types().items():  # every other known field of its type: the report computes with them
        if key in row and not matches_type(row[key], hint):
            return f"{key!r} is {json.dumps(row[key], default=str)[:40]}, not a {getattr(hint, '__name__', str(hint))}"
    for point in row.get("curve", []):  # each point: epoch, step, samples, val_loss, fit_s... all numbers
        if not isinstance(point, dict) or not all(matches_type(value, float | None) for value in point.values()):
            return f"a 'curve' point is {json.dumps(point, default=str)[:40]}, not an object of numbers"
    return ""


@functools.cache
def _row_types() -> dict[str, Any]:
    return typing.get_type_hints(Result)


def parse_results(text: str) -> tuple[list[Result], list[tuple[int, str]]]:
    """The rows of results.jsonl text, and the bad lines as (line number, why) pairs.

    A bad line is skipped, never fatal: a crash mid-write leaves a half line, and a shared run folder
    may hold anything; every complete row around it still counts.
    """
    results: list[Result] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, out-of-range numbers, deep nesting
            bad.append((number, f"not JSON ({error.__class__.__name__})"))
            continue
        problem = row_problem(row)
        if problem:
            bad.append((number, problem))
            continue
        results.append(Result.from_dict(row))
    return results, bad


def read_results(path: Path) -> list[Result]:
    """Read results.jsonl, skipping bad lines (a half-written last line after a crash, a row that is
    not a Result); their line numbers are named on stderr, once per file and set of lines."""
    results, bad = parse_results(path.read_text(errors="replace"))
    key = (str(path.resolve()), tuple(number for number, _ in bad))
    if bad and key not in _warned:
        _warned.add(key)
        lines = "; ".join(f"line {number}: {why}" for number, why in bad)
        print(f"harness: skipped {len(bad)} bad line(s) of {path}: {lines}", file=sys.stderr)
    return results


def append_row(path: Path, result: Result) -> None:
    """Append one row to results.jsonl on a line of its own, flushed to disk.

    A file that does not end in a newline ends in a half-written row (a crash mid-write); appending
    straight after it would glue the new row onto it and lose both. A newline first ends that line,
    which readers then skip as bad, and the new row stays whole.
    """
    with path.open("ab") as handle:
        if handle.tell() > 0:
            with path.open("rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    handle.write(b"\n")
        handle.write(result.to_json().encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
