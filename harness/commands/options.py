"""Options shared by the subcommands that train (run, parity), and their checks."""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError
from harness.executors import DEFAULT_EXECUTOR, EXECUTORS, RAY_FILES, Executor, make_executor
from harness.executors.isolation import ISOLATIONS, default_isolation
from harness.measuring.distributed import resolve_strategy
from harness.measuring.profiling import PROFILERS
from harness.runfolder.plan import RunOptions
from harness.workloads.data import DATASETS, LOADERS, DatasetChoice, resolve_dataset
from harness.workloads.imported import check_imported, is_import_path, parse_args_option

ACCELERATORS = ("cpu", "gpu", "auto")
# defaults of the data flags of `run`; an imported datamodule reads none of them (see DATA_FLAGS)
DEFAULT_BATCH_SIZE, DEFAULT_DATASET, DEFAULT_LOADER = 64, "auto", "device"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def block_steps_arg(text: str) -> int:
    """``--block-steps``: a whole number >= 1, or ``auto`` (0 here; harness.measuring.measure.auto_block_steps resolves it)."""
    return 0 if text.strip().lower() == "auto" else positive_int(text)


def epochs_arg(text: str) -> int:
    """``--max-epochs``: a whole number >= 1, or ``auto`` (0 here; harness.runfolder.plan.epochs_for resolves it)."""
    return 0 if text.strip().lower() == "auto" else positive_int(text)


def seed_int(text: str) -> int:
    """A seed every library the run seeds accepts: numpy's are 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{2**32 - 1} (numpy's seed range)")
    return value


def finite_float(text: str, at_least: float, inclusive: bool) -> float:
    """``text`` as a finite number, >= ``at_least`` (> when not ``inclusive``); else an argparse error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < at_least or (value == at_least and not inclusive):
        raise argparse.ArgumentTypeError(f"{value} must be {'>=' if inclusive else '>'} {at_least:g}")
    return value


def positive_float(text: str) -> float:
    return finite_float(text, 0.0, inclusive=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (0: none, as for a wait)."""
    return finite_float(text, 0.0, inclusive=True)


def add_training_arguments(
    parser: argparse.ArgumentParser, batch_size: int = DEFAULT_BATCH_SIZE, dataset: str = DEFAULT_DATASET, max_epochs: int = 0,
    warmup_blocks: int = 1, synthetic_size: int = 8192,
) -> None:
    parser.add_argument("--workload", default="autoencoder", help="workload name(s), comma-separated, or 'all' (default: autoencoder)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (GPU when one is visible), comma-separated for several (default: auto)")
    parser.add_argument("--dataset", default=dataset, choices=DATASETS, help=f"default: {dataset}; auto = MNIST if on disk or downloadable, else digits")
    parser.add_argument("--data-dir", default="./data", help="where MNIST is read from or downloaded to (default: ./data)")
    parser.add_argument("--loader", default=DEFAULT_LOADER, choices=LOADERS, help="device: batches sliced from tensors on the accelerator (default); dataloader: a torch DataLoader")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers with --loader dataloader (default: 0)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"default: {batch_size}")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default: 1e-3)")
    parser.add_argument(
        "--max-epochs", type=epochs_arg, default=max_epochs, metavar="N|auto",
        help="epoch budget of every run; auto: enough epochs for the workload's sample budget (the autoencoder: "
        f"75,000 samples, 66 epochs of digits, 3 of MNIST), else 3 (default: {max_epochs if max_epochs else 'auto'})",
    )
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer-step budget; -1 for none (default: -1)")
    parser.add_argument("--seed", type=seed_int, default=42, help="seed for data split, shuffling and init (default: 42)")
    parser.add_argument("--synthetic-size", type=positive_int, default=synthetic_size, help=f"samples of --dataset synthetic (default: {synthetic_size})")
    parser.add_argument(
        "--block-steps", type=block_steps_arg, default=0, metavar="N|auto",
        help="training batches per timing block; auto: the planned batches / 20, from 2 to 10 (default: auto)",
    )
    parser.add_argument("--warmup-blocks", type=int, default=warmup_blocks, help=f"timing blocks dropped as warm-up (default: {warmup_blocks})")
    parser.add_argument("--timeout", type=positive_float, default=None, help="seconds before one run is killed and marked failed")
    add_isolation_argument(parser)
    own = parser.add_argument_group("your own model (--workload pkg.mod:MyLightningModule)")
    own.add_argument("--datamodule", default="", metavar="PKG.MOD:CLASS", help="the LightningDataModule of an imported --workload")
    own.add_argument("--init-args", default=None, metavar="JSON|@FILE", help="arguments of the imported module: JSON, or a .json/.yaml file (@config.yaml)")
    own.add_argument("--datamodule-args", default=None, metavar="JSON|@FILE", help="arguments of the --datamodule, as --init-args")
    own.add_argument("--monitor", default="val_loss", help="the logged validation metric that early stopping and the val column use (default: val_loss)")


def add_isolation_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--isolation", choices=ISOLATIONS, default=default_isolation(),
        help=f"each run's fresh process: forked from a server that imported torch and Lightning once, or a cold "
        f"Python per run (~5 s of imports each); multi-process runs are always spawned (default: {default_isolation()})",
    )


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Who runs the runs: this machine, one after another (default), or a Ray cluster (the ``ray`` extra)."""
    group = parser.add_argument_group("executor (where the runs run)")
    group.add_argument(
        "--executor", choices=EXECUTORS, default=DEFAULT_EXECUTOR,
        help="local: one run after another on this machine; ray: each run one Ray task, as many at once as the "
        "cluster has room for, one per GPU (pip install -e '.[ray]') (default: local)",
    )
    group.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:10001", help="the Ray cluster to join; none: start a local Ray instance")
    group.add_argument("--ray-cpus-per-run", type=positive_int, default=1, help="CPUs each Ray task declares (Ray sets OMP_NUM_THREADS from it) (default: 1)")
    group.add_argument(
        "--ray-files", choices=RAY_FILES, default=None,
        help="how each run's logs, TensorBoard files and checkpoints reach the run folder: shared: every node "
        "writes into --out (a path all nodes see); ship: each task returns its files with its row; auto: "
        "shared where a node sees the run folder, else shipped (default: auto)",
    )
    group.add_argument(
        "--ray-gpu-wait", type=non_negative_float, default=None, metavar="SECONDS", dest="ray_gpu_wait_s",
        help="how long a run needing more GPUs than the cluster shows waits for an autoscaler to start GPU nodes "
        "(asked through request_resources) before the sweep stops with exit 2 (default: 600 with --ray-address, "
        "0 for a local instance)",
    )


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor of ``--executor`` and its ``--ray-*`` options; exit 2 for a ray option without ray, or no Ray installed."""
    return make_executor(args.executor, args.isolation, args.ray_address, args.ray_cpus_per_run, args.ray_files, args.ray_gpu_wait_s)


def add_workflow_arguments(parser: argparse.ArgumentParser) -> None:
    """Lightning's scale-out, checkpoint and profiling switches, passed through to every run's Trainer."""
    group = parser.add_argument_group("scale-out, checkpoints and profiling (passed through to Lightning)")
    group.add_argument("--devices", type=positive_int, default=1, help="devices (processes) per node; >1 trains with DDP (default: 1)")
    group.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp; auto = ddp when --devices or --num-nodes > 1 (default: auto)")
    group.add_argument("--num-nodes", type=positive_int, default=1, help="machines of a multi-node job, each started with NODE_RANK/MASTER_ADDR set (default: 1)")
    group.add_argument("--no-checkpoints", dest="checkpoints", action="store_false", help="keep no best.ckpt/last.ckpt; test the final weights (resume then starts runs afresh)")
    group.add_argument("--profiler", default="", choices=PROFILERS, help="Lightning's profiler; its output goes to <run>/profiles/<run_id>/ and the report links it")
    group.add_argument("--weight-histograms", action="store_true", help="write every parameter's histogram to TensorBoard at each epoch end")


def workflow_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields of :func:`add_workflow_arguments`; a command without them gets a single
    process with no checkpoints, profiler or histograms (parity: the plain loop has none either)."""
    devices, num_nodes = getattr(args, "devices", 1), getattr(args, "num_nodes", 1)
    return dict(
        devices=devices,
        num_nodes=num_nodes,
        strategy=resolve_strategy(getattr(args, "strategy", "auto"), devices, num_nodes),
        checkpoints=getattr(args, "checkpoints", False),
        profiler=getattr(args, "profiler", "") or "",
        weight_histograms=getattr(args, "weight_histograms", False),
    )


def check_devices(accelerators: list[str], devices: int, local: bool = True) -> None:
    """More GPUs asked for than this machine shows is a user error, before any run starts (CPU
    "devices" are processes, any number of which Lightning can start). ``local=False``: the runs go to
    a Ray cluster, whose GPUs the executor checks instead."""
    if local and "gpu" in accelerators and devices > torch.cuda.device_count():
        raise UserError(
            f"--devices {devices} with --accelerator gpu: this machine shows {torch.cuda.device_count()} CUDA device(s); "
            "use at most that many (or --accelerator cpu for processes on the CPU)"
        )


def resolve_accelerators(text: str, local: bool = True) -> list[str]:
    """'cpu', 'gpu', 'auto' or a comma list; a GPU asked for but absent is a user error. ``local=False``:
    the runs go to a Ray cluster, so ``gpu`` is not checked against this machine (``auto`` still is)."""
    chosen: list[str] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item not in ACCELERATORS:
            raise UserError(f"unknown accelerator {item!r}; valid choices: {', '.join(ACCELERATORS)}")
        if item == "auto":
            item = "gpu" if torch.cuda.is_available() else "cpu"
            if item == "cpu":
                print("harness: --accelerator auto: no CUDA device visible, running on CPU", file=sys.stderr)
        elif item == "gpu" and local and not torch.cuda.is_available():
            raise UserError(
                "--accelerator gpu: no CUDA device is visible (torch.cuda.is_available() is False, "
                f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --accelerator cpu"
            )
        if item not in chosen:
            chosen.append(item)
    if not chosen:
        raise UserError(f"--accelerator {text!r} names no accelerator; valid choices: {', '.join(ACCELERATORS)}")
    return chosen


def run_options(args: argparse.Namespace) -> RunOptions:
    """Validate the shared options and resolve the dataset once, for every run of the invocation."""
    if args.max_steps < -1 or args.max_steps == 0:
        raise UserError(f"--max-steps must be -1 (no limit) or >= 1, got {args.max_steps}")
    if args.warmup_blocks < 0:
        raise UserError(f"--warmup-blocks must be >= 0, got {args.warmup_blocks}")
    if args.num_workers < 0:
        raise UserError(f"--num-workers must be >= 0, got {args.num_workers}")
    imported = imported_workload_options(args)
    workflow = workflow_options(args)  # checked before the dataset, whose resolution may try a download
    if imported.get("datamodule") and all(is_import_path(w) for w in args.workload.split(",") if w.strip()):
        choice = DatasetChoice(imported["datamodule"], "the imported datamodule brings its own data")
    else:
        choice = resolve_dataset(args.dataset, args.data_dir)
        print(f"harness: dataset {choice.name}: {choice.reason}", file=sys.stderr)
    return RunOptions(
        dataset=choice.name,
        dataset_reason=choice.reason,
        data_dir=str(Path(args.data_dir).resolve()),
        loader=args.loader,
        batch_size=args.batch_size,
        lr=args.lr,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        block_steps=args.block_steps,
        warmup_blocks=args.warmup_blocks,
        synthetic_size=args.synthetic_size,
        num_workers=args.num_workers,
        **imported,
        **workflow,
    )


def imported_workload_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check --datamodule, --init-args, --datamodule-args and --monitor against --workload.

    An imported workload (a name with ':') needs --datamodule; the others belong to imported
    workloads only (--monitor also applies to the built-in ones). Every path is imported here,
    before any run starts.
    """
    workloads = [w.strip() for w in getattr(args, "workload", "").split(",") if w.strip()]
    imported = [w for w in workloads if is_import_path(w)]
    datamodule = getattr(args, "datamodule", "") or ""
    init_args = parse_args_option(getattr(args, "init_args", None), "--init-args")
    datamodule_args = parse_args_option(getattr(args, "datamodule_args", None), "--datamodule-args")
    monitor = (getattr(args, "monitor", "val_loss") or "").strip()
    if not monitor:
        raise UserError("--monitor must name a logged validation metric, e.g. val_loss")
    if not imported and (datamodule or init_args or datamodule_args):
        raise UserError(
            "--datamodule, --init-args and --datamodule-args apply to an imported --workload pkg.mod:Class; "
            f"--workload {args.workload!r} names none"
        )
    for workload in imported:
        check_imported(workload, datamodule, init_args, datamodule_args)
    ignored = [flag for flag, value, default in DATA_FLAGS if getattr(args, value, default) != default]
    if imported and ignored:
        print(
            f"harness: warning: {', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to {', '.join(imported)}: "
            f"its datamodule ({datamodule}) decides its data and batch size",
            file=sys.stderr,
        )
    return dict(datamodule=datamodule, init_args=init_args, datamodule_args=datamodule_args, monitor=monitor)


# data flags of the built-in workloads that an imported datamodule does not read: (flag, attribute, default)
DATA_FLAGS = (
    ("--batch-size", "batch_size", DEFAULT_BATCH_SIZE), ("--dataset", "dataset", DEFAULT_DATASET), ("--loader", "loader", DEFAULT_LOADER),
)


def new_run_dir(out: Path, prefix: str = "run") -> Path:
    """A fresh folder ``<out>/<prefix>-YYYYmmdd-HHMMSS`` (suffixed when that already exists)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = out / f"{prefix}-{stamp}"
    suffix = 2
    while True:  # mkdir, not exists(): two runs started in the same second must not share a folder
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            candidate = out / f"{prefix}-{stamp}-{suffix}"
            suffix += 1
