"""``python -m harness parity``: the harness's baseline against a plain PyTorch loop, same everything."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import env
from harness.commands.options import add_training_arguments, new_run_dir, resolve_accelerators, run_options
from harness.errors import UserError
from harness.plan import RunOptions, parse_params, plan_runs
from harness.runner import run_one
from harness.workload import WORKLOADS
from harness.spec import Result, RunSpec

NAME = "parity"
HELP = "Measure the harness's baseline throughput against a plain PyTorch loop (same model, data, batch, device)."


@dataclass
class Parity:
    workload: str
    accelerator: str
    batch_size: int
    harness_samples_per_s: list[float] = field(default_factory=list)
    plain_samples_per_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """median(harness) / median(plain): 1.0 means the harness costs nothing."""
        return statistics.median(self.harness_samples_per_s) / statistics.median(self.plain_samples_per_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs, order alternated (default: 3)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="WORKLOAD.PARAM=VALUE", help="set a workload parameter, e.g. transformer.d_model=512 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder that receives the parity folder (default: reports/)")
    # ~400 steps per run in blocks of 10, 3 warm-up blocks: long enough that one slow stretch of a
    # shared machine does not decide the ratio (with 3 epochs it swung between 0.74 and 0.85 here)
    add_training_arguments(parser, batch_size=256, dataset="synthetic", max_epochs=10, warmup_blocks=3, synthetic_size=16384)


def measure_parity(
    options: RunOptions, workload: str, accelerator: str, repeats: int, run_dir: Path,
    workload_params: dict[str, dict[str, str]] | None = None,
) -> Parity:
    """Alternate harness and plain runs, each in a fresh process; any failed run is an error."""
    specs = plan_runs([], [workload], [accelerator], repeats, options, {}, str(run_dir), workload_params)
    parity = Parity(workload, accelerator, options.batch_size)
    for spec in specs:
        order = [False, True] if spec.repeat % 2 == 0 else [True, False]
        for plain in order:
            result = run_one(_plain_spec(spec) if plain else spec, run_dir, plain=plain)
            _check(result)
            (parity.plain_samples_per_s if plain else parity.harness_samples_per_s).append(result.samples_per_s)
    return parity


def _plain_spec(spec: RunSpec) -> RunSpec:
    """The same spec under its own id, so that logs and result files do not collide."""
    return replace(spec, run_id=spec.run_id.replace("-baseline-", "-plain-pytorch-"), label="plain-pytorch")


def _check(result: Result) -> None:
    if result.status != "ok" or not result.samples_per_s:
        raise UserError(f"parity run {result.run_id} {result.status}: {result.reason or 'no throughput measured'}")


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    params = parse_params(args.param)
    if params.tricks:
        raise UserError(f"parity compares the baseline only; --param for tricks ({', '.join(params.tricks)}) does not apply")
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
    report = {"env": env.collect(), "results": []}
    for workload in workloads:
        for accelerator in accelerators:
            parity = measure_parity(options, workload, accelerator, args.repeats, run_dir, params.workloads)
            report["results"].append({**asdict(parity), "ratio": parity.ratio})
            print(
                f"{workload} on {accelerator}, batch {options.batch_size}: harness "
                f"{statistics.median(parity.harness_samples_per_s):,.0f} samples/s, plain PyTorch "
                f"{statistics.median(parity.plain_samples_per_s):,.0f} samples/s, ratio {parity.ratio:.2f}"
            )
    (run_dir / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Parity: {run_dir / 'parity.json'}", file=sys.stderr)
    return 0
