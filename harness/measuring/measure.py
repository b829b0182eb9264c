"""Steady-state throughput, losses and peak memory, measured without perturbing the training loop.

The protocol (DESIGN.md): time is taken over blocks of ``block_steps`` training batches with a
device sync only at block edges; the first ``warmup_blocks`` blocks (allocator growth, kernel
selection, lazy init) are dropped; validation, checkpointing and epoch-end work are paused out of
the clock. Losses stay on the device and are summed and read once per block, which is also where a
NaN is caught. Per step, the callback only adds a few Python integer updates and keeps a reference
to the detached loss: no device work at all.
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from harness.errors import NonFiniteLoss

NOISY_IQR_RATIO = 0.10

# --block-steps auto: aim for this many timing blocks per run, with blocks of 2-10 batches. The verdicts
# need about 10 kept blocks (harness.report.verdicts); a short budget (the CNN's or the transformer's 3
# epochs of ~20 batches) would otherwise time 3-4 blocks of 10 and give no speed verdict at all.
AUTO_BLOCKS = 20
AUTO_BLOCK_STEPS = (2, 10)


def auto_block_steps(planned_batches: float) -> int:
    """Batches per timing block for ``--block-steps auto``: the planned training batches over AUTO_BLOCKS,
    within AUTO_BLOCK_STEPS. Not below 2: each block edge syncs the device, which on a GPU stalls its
    queue, so one-batch blocks would time the syncs as much as the steps. Not above 10, the former fixed
    size: a long run keeps the blocks it always had. An unknown count (an iterable dataset) gets 10."""
    low, high = AUTO_BLOCK_STEPS
    if not math.isfinite(planned_batches) or planned_batches <= 0:
        return high
    return max(low, min(high, int(planned_batches) // AUTO_BLOCKS))


def planned_batches(per_epoch: float, max_epochs: int | None, max_steps: int | None, accumulate: int = 1) -> float:
    """The training batches a fit will run: batches per epoch x max_epochs, cut by max_steps (which
    counts optimizer steps, so x ``accumulate``); inf when the epoch length is unknown. One rule for the
    Lightning run (:class:`ThroughputMeter`) and the plain-PyTorch parity loop, so both time blocks alike."""
    epochs = max_epochs if max_epochs is not None and max_epochs > 0 else math.inf
    batches = float(per_epoch) * epochs if per_epoch > 0 else math.inf
    if max_steps is not None and max_steps > 0:
        batches = min(batches, float(max_steps * accumulate))
    return batches


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Block:
    batches: int
    samples: int
    seconds: float
    loss: float | None = None  # mean training loss over the block's batches

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else math.nan


@dataclass
class Throughput:
    """Summary over the kept blocks: median and IQR of samples/s, median time per batch."""

    samples_per_s: float
    samples_per_s_iqr: float
    step_time_ms: float
    blocks: int
    noisy: bool
    warning: str = ""
    rates: tuple[float, ...] = ()  # samples/s of each kept block


def summarise(blocks: list[Block], warmup_blocks: int) -> Throughput | None:
    """Drop warm-up blocks and summarise the rest; say so when too few blocks were left."""
    full = [b for b in blocks if b.seconds > 0]
    warning = ""
    kept = full[warmup_blocks:]
    if not kept:
        if not full:
            return None
        kept = full
        warning = f"only {len(full)} block(s) measured: warm-up included; raise the budget or lower --block-steps"
    rates = [b.samples_per_s for b in kept]
    median = statistics.median(rates)
    spread = iqr(rates)
    step_ms = statistics.median(1000.0 * b.seconds / b.batches for b in kept)
    noisy = median > 0 and spread / median > NOISY_IQR_RATIO
    return Throughput(median, spread, step_ms, len(kept), noisy, warning, tuple(rates))


def throughput_fields(summary: Throughput | None) -> dict[str, Any]:
    """The Result fields a throughput summary fills (empty when nothing was measured)."""
    if summary is None:
        return {}
    return {
        "samples_per_s": summary.samples_per_s,
        "samples_per_s_iqr": summary.samples_per_s_iqr,
        "step_time_ms": summary.step_time_ms,
        "noisy": summary.noisy,
        "blocks_measured": summary.blocks,
        "block_samples_per_s": list(summary.rates),
    }


def iqr(values: list[float]) -> float:
    """Interquartile range (inclusive quartiles); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def batch_size_of(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor (tuple, list or dict batches)."""
    if isinstance(batch, torch.Tensor):
        return batch.size(0)
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if isinstance(item, (torch.Tensor, list, tuple, dict)):
                return batch_size_of(item)
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}")


def _read_sum(losses: list[torch.Tensor]) -> float:
    """The sum of a block's losses, read to the host (a sync: block and epoch edges only); 0 for none.

    Summed in float32 at least, so that a bfloat16 loss does not lose digits in its own sum.
    """
    if not losses:
        return 0.0
    stacked = torch.stack(losses)
    return stacked.sum(dtype=torch.promote_types(stacked.dtype, torch.float32)).item()


class BlockTimer:
    """The timing protocol itself, free of Lightning so that the plain-PyTorch parity loop uses it too.

    Call ``resume`` before a batch, ``add_batch`` after it and ``pause`` around anything that is
    not training (validation, checkpoints, epoch ends). A block closes every ``block_steps``
    batches: one device sync, one clock reading, one read of the summed loss.

    The block's losses are kept as detached device tensors and summed at the block edge, rather
    than added up step by step: an add per step is a kernel launch on a GPU, two of them (block and
    epoch sums) ~1.3 us of Python per step on this project's CPU. The epoch's loss is put together
    from the block sums read at the edges, and the part of a block already counted in the previous
    epoch (blocks run across epoch ends) is read at that epoch's end.
    """

    def __init__(
        self,
        device: torch.device,
        block_steps: int = 10,
        warmup_blocks: int = 1,
        on_block: Callable[[Block], None] | None = None,
    ) -> None:
        if block_steps < 1:
            raise ValueError(f"block_steps must be >= 1, got {block_steps}")
        if warmup_blocks < 0:
            raise ValueError(f"warmup_blocks must be >= 0, got {warmup_blocks}")
        self.device = device
        self.block_steps = block_steps
        self.warmup_blocks = warmup_blocks
        self.loss_scale = 1.0  # Lightning hands callbacks the loss divided by accumulate_grad_batches
        self.on_block = on_block  # called with each closed block while the clock is paused
        self.blocks: list[Block] = []
        self.batches = 0
        self.samples_seen = 0
        self.train_seconds = 0.0  # all timed training, warm-up and partial blocks included
        self.epoch_losses: list[float] = []
        self._running = False
        self._mark = 0.0
        self._block_batches = 0
        self._block_samples = 0
        self._block_seconds = 0.0
        self._block_losses: list[torch.Tensor] = []  # detached, summed at the block edge
        self._carried = 0.0  # sum of the open block's losses that belong to the previous epoch
        self._epoch_loss = 0.0  # sum of this epoch's losses in closed blocks
        self._epoch_has_loss = False
        self._epoch_batches = 0

    def resume(self) -> None:
        if not self._running:
            sync(self.device)
            self._mark = time.perf_counter()
            self._running = True

    def pause(self) -> None:
        if self._running:
            sync(self.device)
            elapsed = time.perf_counter() - self._mark
            self._block_seconds += elapsed
            self.train_seconds += elapsed
            self._running = False

    def add_batch(self, samples: int, loss: torch.Tensor | None) -> None:
        """Count one finished training batch; the loss is kept on the device, not read."""
        self.batches += 1
        self._block_batches += 1
        self._epoch_batches += 1
        self._block_samples += samples
        self.samples_seen += samples
        if loss is not None:
            self._block_losses.append(loss.detach())
            self._epoch_has_loss = True
        if self._block_batches >= self.block_steps:
            self.pause()
            self._close_block()
            self.resume()

    def end_epoch(self) -> None:
        self.pause()
        if self._epoch_has_loss and self._epoch_batches:
            open_block = _read_sum(self._block_losses)
            epoch_sum = self._epoch_loss + open_block - self._carried
            self.epoch_losses.append(epoch_sum * self.loss_scale / self._epoch_batches)
            self._carried = open_block
        self._epoch_loss, self._epoch_batches, self._epoch_has_loss = 0.0, 0, False

    def finish(self) -> None:
        """Close the last, partial block: its loss is always checked, its time kept if it is half a block."""
        self.pause()
        if self._block_batches == 0:
            return
        long_enough = self._block_batches * 2 >= self.block_steps
        self._close_block()
        if not long_enough:
            self.blocks.pop()

    def _close_block(self) -> None:
        loss = None
        if self._block_losses:
            total = _read_sum(self._block_losses)
            loss = total * self.loss_scale / self._block_batches
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"training loss is {loss} in the block ending at batch {self.batches}")
            self._epoch_loss += total - self._carried
        block = Block(self._block_batches, self._block_samples, self._block_seconds, loss)
        self.blocks.append(block)
        if self.on_block is not None:
            self.on_block(block)
        self._block_batches = self._block_samples = 0
        self._block_seconds = 0.0
        self._block_losses = []
        self._carried = 0.0

    def summary(self) -> Throughput | None:
        return summarise(self.blocks, self.warmup_blocks)

    @property
    def final_train_loss(self) -> float | None:
        """Mean training loss over the last epoch, read at its end."""
        return self.epoch_losses[-1] if self.epoch_losses else None


class ThroughputMeter(pl.Callback):
    """Lightning callback that drives a BlockTimer from the training hooks.

    It also writes each block's mean training loss to the Trainer's logger as ``train_loss``: the
    loss is read at the block edge anyway (for the NaN check) and the clock is paused there, so the
    TensorBoard curve costs the measured window nothing. A per-step ``self.log`` in the module would
    cost ~0.8 ms of Lightning's Python per call (measured on Lightning 2.6), about 40% of an
    autoencoder step at batch 256 on CPU; the built-in workloads therefore do not log it themselves.
    """

    def __init__(self, block_steps: int = 10, warmup_blocks: int = 1, log_train_loss: bool = True) -> None:
        # block_steps 0: --block-steps auto, chosen from the planned batches when fit starts (auto_block_steps)
        self.auto_block_steps = block_steps == 0
        self.timer = BlockTimer(torch.device("cpu"), block_steps or AUTO_BLOCK_STEPS[1], warmup_blocks)
        self.example_batch: Any = None  # the first training batch, for counting FLOPs after fit
        self.log_train_loss = log_train_loss
        self._trainer: pl.Trainer | None = None

    def _log_block(self, block: Block) -> None:
        trainer = self._trainer
        if trainer is None or block.loss is None or trainer.logger is None or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.log_metrics({"train_loss": block.loss}, step=trainer.global_step)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.device = trainer.strategy.root_device
        self.timer.loss_scale = float(trainer.accumulate_grad_batches)
        if self.auto_block_steps and self.timer.batches == 0:
            self.timer.block_steps = auto_block_steps(planned_batches(
                trainer.num_training_batches, trainer.max_epochs, trainer.max_steps, trainer.accumulate_grad_batches
            ))
        self._trainer = trainer
        if self.log_train_loss:
            self.timer.on_block = self._log_block

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.timer.resume()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.example_batch is None:
            self.example_batch = batch
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.timer.add_batch(batch_size_of(batch), loss if isinstance(loss, torch.Tensor) else None)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.pause()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.end_epoch()

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.timer.finish()


# the callback hooks that Lightning 2.6's training loop calls at every training step
PER_STEP_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_train_batch_end",
)


def overridden_hooks(callback: pl.Callback) -> list[str]:
    """The hooks (and state methods) of ``pl.Callback`` that ``callback``'s class overrides."""
    return [
        name for name, base in vars(pl.Callback).items()
        if not name.startswith("_") and callable(base) and getattr(type(callback), name) is not base
    ]


class CallbackGroup(pl.Callback):
    """Several callbacks that Lightning dispatches as one.

    Lightning calls every hook of every callback, overridden or not, and six of them run at every
    training step (``PER_STEP_HOOKS``), each through a profiler context and a ``state_key`` lookup:
    ~1.3 us per hook and callback (Lightning 2.6.6, this project's 2-core CPU), so ~8 us per step for
    a callback that does nothing per step. The harness's own observers (the meter, the validation
    curve, the contention monitor) therefore reach Lightning as one callback, and of the per-step
    hooks only those a member overrides do any work.

    The hooks in ``FORWARDED`` go to the members that override them, in the members' order. A
    member that overrides any other hook is refused, so that no hook is silently dropped.
    """

    FORWARDED = (
        "on_fit_start", "on_train_start", "on_train_batch_start", "on_train_batch_end",
        "on_validation_start", "on_validation_end", "on_train_epoch_end", "on_train_end",
    )

    def __init__(self, *members: pl.Callback) -> None:
        for member in members:
            dropped = [name for name in overridden_hooks(member) if name not in self.FORWARDED]
            if dropped:
                raise ValueError(
                    f"{type(member).__name__} overrides {', '.join(dropped)}, which CallbackGroup does not forward "
                    f"(it forwards {', '.join(self.FORWARDED)}); pass it to the Trainer on its own"
                )
        self.members = members
        self._forward: dict[str, list[Callable[..., None]]] = {
            name: [getattr(member, name) for member in members if name in overridden_hooks(member)] for name in self.FORWARDED
        }

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_fit_start"]:
            hook(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_train_start"]:
            hook(trainer, pl_module)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        for hook in self._forward["on_train_batch_start"]:
            hook(trainer, pl_module, batch, batch_idx)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for hook in self._forward["on_train_batch_end"]:
            hook(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_validation_start"]:
            hook(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_validation_end"]:
            hook(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_train_epoch_end"]:
            hook(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._forward["on_train_end"]:
            hook(trainer, pl_module)


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak-memory window here: CUDA's peak stats on a GPU, the RSS high-water mark on a CPU.

    On a CPU the mark is reset through ``/proc/self/clear_refs`` (Linux 4.0+), so that the peak is the
    run's own from fit on, whether its process was spawned (imports can peak above training) or forked
    from the pre-imported server (whose pages the child shares at first); see harness.executors.isolation.
    """
    global _rss_mark_reset
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak RSS (proc(5))
        _rss_mark_reset = _vm_hwm_bytes() is not None
    except OSError:
        _rss_mark_reset = False


_rss_mark_reset = False


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak memory of this process: CUDA's max allocated on a GPU, the RSS high-water mark on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    if _rss_mark_reset:
        hwm = _vm_hwm_bytes()
        if hwm is not None:
            return hwm, "max_rss_fit"
    return max_rss_bytes(), "max_rss"


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def max_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
