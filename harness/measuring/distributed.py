"""Scale-out through Lightning's own strategies: which ones the harness can measure, and how the
numbers of several processes become one row.

The harness reads its measurements (the timer, the curve, peak memory) in the process that calls
``fit``. Strategies that start their workers as fresh scripts (``ddp``: Lightning's subprocess
launcher, torchrun, SLURM) run ``fit`` in every process, this one included, so each rank measures
itself and the ranks are combined here with collective calls. Strategies that run ``fit`` in
spawned or forked children (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) would leave this process
with nothing measured: they are refused with that reason.

Combining ranks: samples of a timing block are summed over the ranks and its time is the slowest
rank's (DDP's gradient all-reduce keeps them in step), so samples/s is the whole job's; peak memory
is per process, reported as the largest rank with every rank's figure in ``details``.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import StrategyRegistry

from harness.errors import UserError, unknown_name_error
from harness.measuring.measure import Block

IN_CHILD_PROCESS = ("spawn", "fork", "notebook")


def resolve_strategy(strategy: str, devices: int, num_nodes: int) -> str:
    """Check ``--strategy`` against Lightning's registry; ``auto`` on several devices becomes ``ddp``.

    A UserError (exit 2) names a strategy that is unknown or runs fit in child processes.
    """
    strategy = strategy.strip()
    known = ["auto", *StrategyRegistry.available_strategies()]
    if strategy not in known:
        raise unknown_name_error("--strategy", strategy, known, "Lightning's StrategyRegistry")
    if any(word in strategy for word in IN_CHILD_PROCESS):
        raise UserError(
            f"--strategy {strategy!r} runs fit in spawned or forked processes, where the harness cannot read its "
            "measurements; use --strategy ddp (the same DDP, each rank started as a script)"
        )
    if strategy == "auto" and devices * num_nodes > 1:
        return "ddp"
    return strategy


def is_distributed(strategy: str, devices: int, num_nodes: int) -> bool:
    """Whether a run trains in several processes (or with a multi-process strategy on one device)."""
    return devices * num_nodes > 1 or strategy not in ("auto", "single_device")


def is_global_zero_env(environ: dict[str, str]) -> bool:
    """Rank 0 of the whole job, from the variables Lightning's launcher sets (absent: a single process)."""
    return environ.get("NODE_RANK", "0") == "0" and environ.get("LOCAL_RANK", "0") == "0"


def combine_blocks(trainer: pl.Trainer, blocks: list[Block]) -> list[Block]:
    """Every rank's timing blocks as the job's: samples summed, time of the slowest rank, loss averaged.

    Must be called on every rank (it is a collective). Ranks that closed different numbers of
    blocks are cut to the fewest.
    """
    if trainer.world_size == 1:
        return blocks
    strategy = trainer.strategy
    device = strategy.root_device
    counts = strategy.all_gather(torch.tensor([len(blocks)], device=device))
    longest = int(counts.max())
    table = torch.full((longest, 4), math.nan, dtype=torch.float64, device=device)
    for index, block in enumerate(blocks):
        loss = block.loss if block.loss is not None else math.nan
        table[index] = torch.tensor([block.batches, block.samples, block.seconds, loss], dtype=torch.float64)
    gathered = strategy.all_gather(table).cpu()  # (world_size, blocks, 4)
    combined = []
    for index in range(int(counts.min())):
        rows = gathered[:, index]
        losses = rows[:, 3][~torch.isnan(rows[:, 3])]
        combined.append(
            Block(
                batches=int(rows[0, 0]),  # batches per rank: the step time stays a step's time
                samples=int(rows[:, 1].sum()),
                seconds=float(rows[:, 2].max()),
                loss=float(losses.mean()) if len(losses) else None,
            )
        )
    return combined


def gather_peaks(trainer: pl.Trainer, peak_bytes: int) -> list[int]:
    """Every rank's peak memory, in rank order (a collective)."""
    if trainer.world_size == 1:
        return [peak_bytes]
    gathered = trainer.strategy.all_gather(torch.tensor([peak_bytes], dtype=torch.int64, device=trainer.strategy.root_device))
    return [int(value) for value in gathered.flatten().cpu()]
