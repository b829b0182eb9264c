"""The GPU check: one prepared command that exercises every GPU path and leaves a report to commit.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out "$OUT/gpu-check"          # on a CUDA machine
    PYTHONPATH=. python3 benchmarks/gpu_check.py --cpu-smoke --out /tmp/smoke    # the same sequence on CPU

GPU time is lent in short, rare slots, so the check is written to succeed the first time: it runs
from the source tree with whatever torch/Lightning the machine has (no install, no network), it
runs every step even when one fails, it stops starting steps before ``--budget-s`` runs out, and it
rewrites its summary (``gpu-check.md``, ``gpu-check.json``) after every step, so a killed call still
leaves what it did. ``--cpu-smoke`` runs the same commands with ``--accelerator cpu``, tiny budgets
and shorter trick lists (each step says which), and is tested in CI (tests/test_gpu_check.py), so
that the GPU call cannot fail for a typo.

What the steps cover (every CUDA-only path of the harness):
- the main job, ``run --tricks all --accelerator gpu``, on the seed autoencoder (digits, offline);
- ``--accelerator cpu,gpu`` on the seed autoencoder: GPU/CPU speed ratios, 16-mixed with its GradScaler;
- the transformer at d_model 1024 with every precision trick: CUDA peak memory, MFU against the dense peak;
- ``parity --accelerator gpu`` at batch 1024: the baseline's share of plain PyTorch, and every trick
  with a plain equivalent, harness speed-up against plain speed-up (fidelity); then the same for the
  precision tricks on the transformer;
- an out-of-memory row: a transformer batch far beyond 139 GiB fails with the reason, while
  ``grad-accumulation`` in mode same-effective-batch (the same batch in 256 micro-batches) runs on;
- the device-resident batch check against free memory (every GPU row must say ``loader: device``);
- the 2026 tricks (compile, tf32, fp8, EMA, fused AdamW, activation checkpointing on the transformer;
  channels_last and cuDNN benchmark on the CNN): none skipped on a GPU but fp8 without torchao.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER_1024 = ["-p", "transformer.d_model=1024", "-p", "transformer.layers=4", "-p", "transformer.heads=16", "-p", "transformer.seq_len=256"]
TRANSFORMER_SMOKE = ["-p", "transformer.d_model=32", "-p", "transformer.layers=1", "-p", "transformer.heads=2", "-p", "transformer.seq_len=16"]
# 16,384 sequences of 1,024 tokens at d_model 256: activations of hundreds of GiB, far past an H200's 139 GiB
OOM_SHAPE = ["-p", "transformer.d_model=256", "-p", "transformer.layers=1", "-p", "transformer.heads=16", "-p", "transformer.seq_len=1024", "-p", "transformer.sequences=32768"]
OOM_SMOKE = ["-p", "transformer.d_model=16", "-p", "transformer.layers=1", "-p", "transformer.heads=2", "-p", "transformer.seq_len=16", "-p", "transformer.sequences=256"]
# k=256: micro-batches of 64, whose attention (64 x 16 heads x 1024 x 1024 = 2^30 scores) stays under
# 2^31 elements: with micro-batches of 256 (k=64) the attention backward with a mask died with "CUDA
# error: an illegal memory access" on the H200 (torch 2.11), the int32-index class of pytorch/pytorch#150054
ACCUMULATE = ["-p", "grad-accumulation.k=256", "-p", "grad-accumulation.mode=same-effective-batch"]
ACCUMULATE_SMOKE = ["-p", "grad-accumulation.k=4", "-p", "grad-accumulation.mode=same-effective-batch"]


@dataclass
class Step:
    """One harness command; ``gpu`` and ``smoke`` are its arguments in each mode (after the command name)."""

    name: str
    what: str
    command: str  # "run" or "parity"
    gpu: list[str]
    smoke: list[str]
    expect_failed_rows: bool = False  # exit code 1 is the expected outcome (the out-of-memory row)
    checks: list[Callable[[Path, bool], list[str]]] = field(default_factory=list)


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in folder.glob("*/results.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def _parity(folder: Path) -> list[dict[str, Any]]:
    return [r for path in folder.glob("*/parity.json") for r in json.loads(path.read_text())["results"]]


def check_rows_ran(folder: Path, gpu: bool) -> list[str]:
    """Every row ok or skipped with a reason; GPU rows hold CUDA peaks and device-resident batches."""
    problems, rows = [], _rows(folder)
    if not rows:
        return [f"no rows in {folder}"]
    for row in rows:
        where = f"{row['run_id']}"
        if row["status"] == "failed":
            problems.append(f"{where} failed: {row['reason']}")
        elif row["status"] == "skipped" and not row["reason"]:
            problems.append(f"{where} skipped with no reason")
        elif row["status"] == "ok" and row["accelerator"] == "gpu":
            if row["mem_kind"] != "cuda_max_allocated" or not row["peak_mem_bytes"]:
                problems.append(f"{where}: no CUDA peak memory ({row['mem_kind']}, {row['peak_mem_bytes']})")
            if row["loader"] != "device":
                problems.append(f"{where}: batches not device-resident ({row['loader']}: {row['details'].get('loader_reason')})")
    return problems


def check_forked(folder: Path, gpu: bool) -> list[str]:
    """Every row ran in a child forked from the pre-imported server (Linux), none fell back to spawn:
    a CUDA context the server had touched would have made the child's own CUDA fail or be refused."""
    if not sys.platform.startswith("linux"):
        return []
    return [
        f"{row['run_id']}: isolation {row.get('isolation')!r} {row['details'].get('isolation_note', '')}".rstrip()
        for row in _rows(folder) if row.get("isolation") != "fork" or row["details"].get("isolation_note")
    ]


def check_16_mixed_scaler(folder: Path, gpu: bool) -> list[str]:
    """16-mixed ran with Lightning's GradScaler on the GPU (skipped with the reason on a CPU)."""
    rows = [r for r in _rows(folder) if r["trick"] == "16-mixed"]
    if not rows:
        return ["no 16-mixed row"]
    problems = []
    for row in rows:
        if row["accelerator"] == "gpu" and (row["status"] != "ok" or row["details"].get("grad_scaler") != "GradScaler"):
            problems.append(f"{row['run_id']}: {row['status']} {row['reason']} grad_scaler={row['details'].get('grad_scaler')}")
        if row["accelerator"] == "cpu" and row["status"] != "skipped":
            problems.append(f"{row['run_id']}: 16-mixed on a CPU must be skipped, got {row['status']}")
    return problems


def check_mfu(folder: Path, gpu: bool) -> list[str]:
    """GPU rows of the built-in workloads carry MFU against the device's dense peak."""
    if not gpu:
        return []
    rows = _rows(folder)
    missing = [r for r in rows if r["status"] == "ok" and r["accelerator"] == "gpu" and r["mfu"] is None]
    names = ", ".join(r["run_id"] for r in missing)
    return [f"no MFU in {names} (device {missing[0]['device_name']!r} not in harness/measuring/flops.py?)"] if missing else []


def check_gpu_cpu_ratio(folder: Path, gpu: bool) -> list[str]:
    """summary.json has the GPU/CPU speed ratio of the GPU rows."""
    if not gpu:
        return []
    rows = [r for path in folder.glob("*/summary.json") for r in json.loads(path.read_text())]
    ratios = [r.get("gpu_cpu_speed") for r in rows if r.get("accelerator") == "gpu"]
    return [] if any(isinstance(v, (int, float)) for v in ratios) else [f"no GPU/CPU ratio in summary.json: {ratios}"]


def check_out_of_memory(folder: Path, gpu: bool) -> list[str]:
    """The huge batch failed as out of memory, and accumulation of the same batch ran on."""
    rows = {r["trick"]: r for r in _rows(folder)}
    problems = []
    base, accumulated = rows.get("baseline"), rows.get("grad-accumulation")
    if gpu and (base is None or base["status"] != "failed" or "out of memory" not in base["reason"]):
        problems.append(f"the huge batch did not fail as out of memory: {base and (base['status'], base['reason'])}")
    if accumulated is None or accumulated["status"] != "ok":
        problems.append(f"grad-accumulation did not run on after it: {accumulated and (accumulated['status'], accumulated['reason'])}")
    return problems


def check_parity(folder: Path, gpu: bool) -> list[str]:
    """A baseline ratio and, for every trick asked for, a fidelity or a stated reason."""
    results = _parity(folder)
    if not results:
        return [f"no parity.json in {folder}"]
    problems = []
    for result in results:
        if not result.get("baseline"):
            problems.append(f"{result['workload']}: no baseline ratio")
        for row in result["tricks"]:
            if row["status"] == "ok" and row["fidelity"] is None:
                problems.append(f"{result['workload']}/{row['label']}: ok but no fidelity")
            if row["status"] == "failed":
                problems.append(f"{result['workload']}/{row['label']}: failed: {row['reason']}")
    return problems


# the 2026 tricks: on a GPU none may be skipped, except fp8 where torchao is absent or the GPU predates float8
MUST_RUN_ON_GPU = ("compile", "tf32", "cudnn-benchmark", "channels-last", "fused-optimizer", "activation-checkpointing", "ema")


def check_new_tricks_ran(folder: Path, gpu: bool) -> list[str]:
    """On a GPU the CUDA-only tricks ran rather than being skipped; compile recorded its compile time;
    fp8 ran, or says that torchao is missing or the GPU has no float8 tensor cores."""
    if not gpu:
        return []
    problems = []
    for row in _rows(folder):
        names = row["trick"].split("+")
        if row["status"] == "skipped" and any(name in MUST_RUN_ON_GPU for name in names):
            problems.append(f"{row['run_id']} skipped on a GPU: {row['reason']}")
        if row["status"] == "skipped" and "fp8" in names and not ("torchao" in row["reason"] or "compute capability" in row["reason"]):
            problems.append(f"{row['run_id']} skipped for another reason than torchao or the GPU: {row['reason']}")
        if row["status"] == "ok" and "compile" in names and row["details"].get("compile_s") is None:
            problems.append(f"{row['run_id']}: compiled but no compile_s")
    return problems


STEPS = [
    Step(
        "main", "the main job on the seed autoencoder (digits: offline)", "run",
        ["--tricks", "all", "--accelerator", "gpu", "--dataset", "digits"],
        ["--tricks", "grad-clipping,16-mixed", "--accelerator", "cpu", "--dataset", "digits", "--max-epochs", "1", "--repeats", "1"],
        checks=[check_rows_ran, check_forked],
    ),
    Step(
        "transformer", "the transformer at d_model 1024 with every precision trick (MFU, CUDA peaks)", "run",
        ["--workload", "transformer", "--tricks", "bf16-mixed,16-mixed,bf16-true", "--accelerator", "gpu", "--batch-size", "32",
         *TRANSFORMER_1024, "-p", "transformer.sequences=4096", "--max-epochs", "2", "--no-checkpoints"],
        ["--workload", "transformer", "--tricks", "bf16-mixed,16-mixed", "--accelerator", "cpu", "--batch-size", "8",
         *TRANSFORMER_SMOKE, "-p", "transformer.sequences=128", "--max-epochs", "1", "--no-checkpoints"],
        checks=[check_rows_ran, check_16_mixed_scaler, check_mfu],
    ),
    Step(
        "parity", "parity at batch 1024: the baseline and every trick with a plain PyTorch equivalent", "parity",
        ["--accelerator", "gpu", "--batch-size", "1024", "--synthetic-size", "65536",
         "--tricks", "bf16-mixed,16-mixed,bf16-true,grad-clipping,grad-accumulation", "--repeats", "2"],
        ["--accelerator", "cpu", "--batch-size", "64", "--synthetic-size", "1024",
         "--tricks", "bf16-mixed,16-mixed", "--repeats", "1", "--max-epochs", "1", "--warmup-blocks", "0"],
        checks=[check_parity],
    ),
    Step(
        "out-of-memory", "a batch past the GPU's memory fails with the reason; accumulation of it runs on", "run",
        ["--workload", "transformer", "--tricks", "grad-accumulation", *ACCUMULATE, "--accelerator", "gpu", "--batch-size", "16384",
         *OOM_SHAPE, "--max-epochs", "1", "--no-checkpoints"],
        ["--workload", "transformer", "--tricks", "grad-accumulation", *ACCUMULATE_SMOKE, "--accelerator", "cpu", "--batch-size", "64",
         *OOM_SMOKE, "--max-epochs", "1", "--no-checkpoints"],
        expect_failed_rows=True,
        checks=[check_out_of_memory],
    ),
    Step(
        "cpu-gpu", "the seed autoencoder on both: GPU/CPU speed ratios, 16-mixed's GradScaler", "run",
        ["--tricks", "bf16-mixed,16-mixed", "--accelerator", "cpu,gpu", "--dataset", "synthetic", "--synthetic-size", "65536",
         "--batch-size", "1024", "--max-epochs", "3"],
        ["--tricks", "16-mixed", "--accelerator", "cpu", "--dataset", "synthetic", "--synthetic-size", "512",
         "--batch-size", "64", "--max-epochs", "1"],
        checks=[check_rows_ran, check_16_mixed_scaler, check_gpu_cpu_ratio],
    ),
    Step(
        "new-tricks", "the 2026 tricks on the transformer at d_model 1024: compile, tf32, fp8, EMA, fused AdamW, "
        "activation checkpointing, and fp8/compile with bf16", "run",
        ["--workload", "transformer", "--tricks", "compile,tf32,fp8,ema,fused-optimizer,activation-checkpointing,bf16-mixed,"
         "bf16-mixed+compile,fp8+bf16-mixed+compile", "--accelerator", "gpu", "--batch-size", "32", *TRANSFORMER_1024,
         "-p", "transformer.sequences=4096", "--max-epochs", "2", "--repeats", "1", "--no-checkpoints"],
        ["--workload", "transformer", "--tricks", "tf32,fp8,ema", "--accelerator", "cpu", "--batch-size", "8", *TRANSFORMER_SMOKE,
         "-p", "transformer.sequences=128", "--max-epochs", "1", "--repeats", "1", "--no-checkpoints"],
        checks=[check_rows_ran, check_new_tricks_ran, check_forked],
    ),
    Step(
        "new-tricks-cnn", "the 2026 tricks of convolutions on the CNN: channels_last, cuDNN benchmark, with bf16 and compile", "run",
        ["--workload", "cnn", "--tricks", "channels-last,cudnn-benchmark,bf16-mixed,bf16-mixed+channels-last,compile",
         "--accelerator", "gpu", "--dataset", "digits", "--batch-size", "256", "--max-epochs", "20", "--repeats", "1", "--no-checkpoints"],
        ["--workload", "cnn", "--tricks", "channels-last,cudnn-benchmark", "--accelerator", "cpu", "--dataset", "digits",
         "--max-epochs", "1", "--repeats", "1", "--no-checkpoints"],
        checks=[check_rows_ran, check_new_tricks_ran],
    ),
    Step(
        "parity-transformer", "parity of the precision tricks on the transformer at d_model 1024", "parity",
        ["--workload", "transformer", "--accelerator", "gpu", "--batch-size", "32", *TRANSFORMER_1024,
         "-p", "transformer.sequences=4096", "--tricks", "bf16-mixed,16-mixed", "--repeats", "2", "--max-epochs", "1", "--warmup-blocks", "2"],
        ["--workload", "transformer", "--accelerator", "cpu", "--batch-size", "8", *TRANSFORMER_SMOKE,
         "-p", "transformer.sequences=128", "--tricks", "bf16-mixed", "--repeats", "1", "--max-epochs", "1", "--warmup-blocks", "0"],
        checks=[check_parity],
    ),
]


@dataclass
class Outcome:
    name: str
    what: str
    argv: list[str]
    exit_code: int | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.problems


def run_step(step: Step, out: Path, gpu: bool, timeout_s: float, overrides: list[str] = ()) -> Outcome:
    """Run one step's command (``overrides`` last, so that they win) and its checks."""
    folder = out / step.name
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "harness", step.command, *(step.gpu if gpu else step.smoke), *overrides, "--out", str(folder)]
    if step.command == "run":
        argv.append("--quiet")
        if not (gpu and step.name == "main") and "--repeats" not in argv:  # once per cell, but the main job on a GPU, run as users run it
            argv[argv.index("--out"):argv.index("--out")] = ["--repeats", "1"]
    outcome = Outcome(step.name, step.what, argv[1:])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    started = time.perf_counter()
    with (folder / "command.log").open("w") as log:
        log.write("$ " + " ".join(argv[1:]) + "\n")
        log.flush()
        try:
            completed = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
            outcome.exit_code = completed.returncode
        except subprocess.TimeoutExpired:
            outcome.problems.append(f"timed out after {timeout_s:.0f} s")
    outcome.seconds = time.perf_counter() - started
    expected = (0, 1) if step.expect_failed_rows else (0,)
    if outcome.exit_code is not None and outcome.exit_code not in expected:
        outcome.problems.append(f"exit code {outcome.exit_code} (expected {' or '.join(map(str, expected))}); see {step.name}/command.log")
    for check in step.checks:
        try:
            outcome.problems += check(folder, gpu)
        except Exception as error:  # a check that cannot read the step's files is itself a finding
            outcome.problems.append(f"{check.__name__}: {type(error).__name__}: {error}")
    return outcome


def write_summary(out: Path, outcomes: list[Outcome], gpu: bool, started: float, environment: dict[str, Any]) -> None:
    lines = [
        f"# GPU check ({'GPU' if gpu else 'CPU smoke'})",
        "",
        f"Device: {environment.get('device')}; torch {environment.get('torch')}, Lightning {environment.get('lightning')}, "
        f"CUDA {environment.get('cuda')}; {environment.get('cpus')} CPUs. Total {time.perf_counter() - started:.0f} s.",
        "",
        "| step | what | exit | seconds | result |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        result = f"skipped: {o.skipped}" if o.skipped else ("ok" if o.ok else "PROBLEMS: " + "; ".join(o.problems))
        lines.append(f"| {o.name} | {o.what} | {o.exit_code if o.exit_code is not None else ''} | {o.seconds:.0f} | {result} |")
    lines += ["", "Commands:", ""] + [f"- `{o.name}`: `python {' '.join(o.argv)}`" for o in outcomes]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    (out / "gpu-check.json").write_text(json.dumps({"gpu": gpu, "env": environment, "steps": [vars(o) for o in outcomes]}, indent=2) + "\n")


def describe_environment() -> dict[str, Any]:
    """Versions and the device, from a child process: this process imports no torch and touches no CUDA."""
    code = (
        "import json, os, torch, lightning; c = torch.cuda.is_available(); "
        "print(json.dumps({'torch': torch.__version__, 'lightning': lightning.__version__, 'cuda': torch.version.cuda, "
        "'device': torch.cuda.get_device_name(0) if c else 'cpu', 'cpus': os.cpu_count()}))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    try:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"device": f"unknown ({completed.stderr.strip()[-200:]})"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports")) / "gpu-check")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same sequence on the CPU with tiny budgets")
    parser.add_argument("--budget-s", type=float, default=510.0, help="start no step after this many seconds (default: 510)")
    parser.add_argument("--only", default="", help="comma list of step names to run (default: all)")
    # a short GPU slot: every process costs its imports (~22 s on the H200 machine seen here), so a
    # slot may only fit fewer parity processes than the full check plans
    parser.add_argument("--parity-tricks", default="", help="replace the parity steps' --tricks (e.g. bf16-mixed,grad-clipping)")
    parser.add_argument("--parity-repeats", type=int, default=0, help="replace the parity steps' --repeats")
    args = parser.parse_args(argv)
    gpu = not args.cpu_smoke
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    environment = describe_environment()
    device = str(environment.get("device", ""))
    if gpu and (device in ("", "cpu") or device.startswith("unknown")):
        print(f"gpu_check: no CUDA device visible ({environment}); use --cpu-smoke on a machine without one", file=sys.stderr)
        return 2
    only = {name for name in args.only.split(",") if name}
    outcomes: list[Outcome] = []
    for step in STEPS:
        if only and step.name not in only:
            continue
        left = args.budget_s - (time.perf_counter() - started)
        if left < 20:
            outcomes.append(Outcome(step.name, step.what, [], skipped=f"budget of {args.budget_s:.0f} s spent"))
        else:
            print(f"gpu_check: {step.name}: {step.what} ({left:.0f} s of budget left)", file=sys.stderr, flush=True)
            overrides = []
            if step.command == "parity" and args.parity_tricks:
                overrides += ["--tricks", args.parity_tricks]
            if step.command == "parity" and args.parity_repeats:
                overrides += ["--repeats", str(args.parity_repeats)]
            outcomes.append(run_step(step, out, gpu, timeout_s=left, overrides=overrides))
            print(f"gpu_check: {step.name}: {'ok' if outcomes[-1].ok else outcomes[-1].problems} in {outcomes[-1].seconds:.0f} s", file=sys.stderr, flush=True)
        write_summary(out, outcomes, gpu, started, environment)
    print((out / "gpu-check.md").read_text())
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
