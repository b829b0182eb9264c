"""A plain PyTorch training loop over the same model, data, batch size and device as the harness.

It answers two questions. "How much does the harness (Lightning included) cost?": the parity check
runs the harness's baseline and this loop in fresh processes under one invocation and reports the
ratio of their throughputs. "Does the harness measure a trick's effect as a hand-written loop
would?": a trick that has a plain PyTorch equivalent (``Trick.plain_equivalent``) sets it on a
:class:`PlainLoop` (autocast, a GradScaler, bfloat16 weights, ``clip_grad_norm_``, k-step
accumulation), and the speed-up of the trick through the harness is compared with the speed-up of
the same change in this loop: the fidelity. Both use the same BlockTimer, so the ratios compare
loops, not stopwatches.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch

from harness import env
from harness.errors import NonFiniteLoss, TrickSkipped, first_line
from harness.measuring.contention import read_cpu_times, record_contention, torch_threads
from harness.measuring.measure import BlockTimer, auto_block_steps, batch_size_of, planned_batches, peak_memory, reset_peak_memory, throughput_fields
from harness.spec import Result, RunSpec
from harness.trick import TRICKS, Trick
from harness.workload import WORKLOADS
from harness.workloads.data import TensorDataModule

PLAIN_LABEL = "plain-pytorch"


class NoPlainEquivalent(Exception):
    """A trick whose effect this loop cannot reproduce in plain PyTorch (e.g. the LR finder)."""


@dataclass
class PlainLoop:
    """What the hand-written loop does beyond plain float32 training; tricks fill it in.

    Each field is one plain PyTorch mechanism, the one Lightning itself uses for the trick, so that
    the loop is what a user would write by hand for the same change.
    """

    accelerator: str
    batch_size: int
    autocast_dtype: torch.dtype | None = None  # torch.autocast(device, dtype) around forward and loss
    grad_scaler: bool = False  # torch.amp.GradScaler: scale, unscale before clipping, step, update
    param_dtype: torch.dtype | None = None  # module.to(dtype), floating inputs cast to it (a "true" precision)
    clip: tuple[str, float] | None = None  # ("norm" | "value", threshold): clip_grad_norm_ / clip_grad_value_
    accumulate: int = 1  # optimizer step every k batches, each loss divided by k
    changes: list[str] = field(default_factory=list)  # what the loop does differently, in words

    @property
    def precision(self) -> str:
        if self.param_dtype is torch.bfloat16:
            return "bf16-true"
        if self.autocast_dtype is torch.bfloat16:
            return "bf16-mixed"
        if self.autocast_dtype is torch.float16:
            return "16-mixed"
        return "32-true"


def has_plain_equivalent(trick: type[Trick]) -> bool:
    """Whether the trick says how the plain loop reproduces it."""
    return trick.plain_equivalent is not Trick.plain_equivalent


def accelerator_device(accelerator: str) -> torch.device:
    return torch.device("cuda", 0) if accelerator == "gpu" else torch.device("cpu")


def plain_loop_for(spec: RunSpec) -> PlainLoop:
    """The loop ``spec.tricks`` ask for; TrickSkipped where one cannot run here, NoPlainEquivalent
    where one has no plain form."""
    loop = PlainLoop(accelerator=spec.accelerator, batch_size=spec.batch_size)
    for name in spec.tricks:
        trick = TRICKS.get(name).from_params(spec.trick_params.get(name, {}))
        if not has_plain_equivalent(type(trick)):
            raise NoPlainEquivalent(f"{name} has no plain PyTorch equivalent in the parity loop")
        trick.plain_equivalent(loop)
    return loop


def execute_plain(spec: RunSpec) -> Result:
    """Train ``spec.workload`` with a hand-written loop (with the plain form of ``spec.tricks``);
    never raises for a skipped or failed run, as ``harness.worker.execute``."""
    started = time.perf_counter()
    result = Result.for_spec(spec, "ok", device_name=env.device_name(spec.accelerator))
    result.details["loop"] = PLAIN_LABEL
    try:
        _train_plain(spec, result)
    except (TrickSkipped, NoPlainEquivalent) as skipped:
        result.status, result.reason = "skipped", str(skipped)
    except NonFiniteLoss as error:
        result.status, result.reason = "failed", f"non-finite loss: {error}"
    except torch.OutOfMemoryError as error:
        result.status, result.reason = "failed", f"out of memory: {first_line(error)}"
    result.wall_s = time.perf_counter() - started
    return result


def _train_plain(spec: RunSpec, result: Result) -> None:
    """zero_grad, forward (under autocast), backward (scaled), clip, step, LR schedule per epoch."""
    loop = plain_loop_for(spec)
    device = accelerator_device(spec.accelerator)
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    workload = WORKLOADS.get(spec.workload).from_params(spec.workload_params)
    result.dataset = workload.dataset_label(spec)
    module = workload.build_module(spec).to(device)
    if loop.param_dtype is not None:
        module = module.to(loop.param_dtype)
    datamodule = workload.build_datamodule(spec)
    if not isinstance(datamodule, TensorDataModule):
        raise TypeError(f"the parity loop needs a TensorDataModule, got {type(datamodule).__name__}")
    datamodule.device = device
    datamodule.batch_size = loop.batch_size
    datamodule.setup("fit")
    optim_conf = module.configure_optimizers()
    optimizer = optim_conf["optimizer"]
    scheduler = optim_conf["lr_scheduler"]["scheduler"]
    scaler = torch.amp.GradScaler(device.type) if loop.grad_scaler else None
    autocast = (
        (lambda: torch.autocast(device.type, dtype=loop.autocast_dtype))
        if loop.autocast_dtype is not None else contextlib.nullcontext
    )

    module.train()
    steps = optimizer_steps = epochs = 0
    loader = datamodule.train_dataloader()
    batches_per_epoch = len(loader)
    # --block-steps auto (0): the same rule and the same planned batches as the Lightning run's meter
    planned = planned_batches(batches_per_epoch, spec.max_epochs, spec.max_steps, loop.accumulate)
    timer = BlockTimer(device, spec.block_steps or auto_block_steps(planned), spec.warmup_blocks)
    reset_peak_memory(device)
    result.details["threads_in_fit"] = torch_threads()
    cpu_before = read_cpu_times()
    fit_started = time.perf_counter()
    for _ in range(spec.max_epochs):
        for index, batch in enumerate(loader):
            timer.resume()
            inputs = [_cast(t.to(device, non_blocking=True), loop.param_dtype) for t in batch]
            with autocast():
                loss = workload.plain_loss(module, tuple(inputs))
            scaled = loss / loop.accumulate if loop.accumulate > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            steps += 1
            # as Lightning: step every k batches and at the end of the epoch
            if steps % loop.accumulate == 0 or index + 1 == batches_per_epoch:
                _step(module, optimizer, scaler, loop)
                optimizer_steps += 1
            timer.add_batch(batch_size_of(batch), loss)
            if 0 <= spec.max_steps <= optimizer_steps:
                break
        timer.end_epoch()
        scheduler.step()
        epochs += 1
        if 0 <= spec.max_steps <= optimizer_steps:
            break
    timer.finish()
    result.fit_s = time.perf_counter() - fit_started
    cpu_after = read_cpu_times()
    own = cpu_after.own - cpu_before.own if cpu_before is not None and cpu_after is not None else 0.0
    threads = result.details["threads_in_fit"]["intra_op"] if result.accelerator == "cpu" else None
    record_contention(result.details, cpu_before, cpu_after, own, threads)
    peak, mem_kind = peak_memory(device)
    for name, value in throughput_fields(timer.summary()).items():
        setattr(result, name, value)
    result.precision, result.batch_size, result.loader = loop.precision, loop.batch_size, datamodule.loader_used
    result.peak_mem_bytes, result.mem_kind, result.train_loss = peak, mem_kind, timer.final_train_loss
    result.steps, result.optimizer_steps, result.epochs = steps, optimizer_steps, epochs
    result.details["plain_changes"] = loop.changes
    if scaler is not None:
        result.details["grad_scale"] = float(scaler.get_scale())


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Floating inputs into the weights' dtype for a "true" precision, as Lightning's precision plugin does."""
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def _step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, loop: PlainLoop) -> None:
    """One optimizer step: unscale (fp16), clip, step, update the scale, zero the gradients."""
    if loop.clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        algorithm, threshold = loop.clip
        if algorithm == "norm":
            torch.nn.utils.clip_grad_norm_(module.parameters(), threshold)
        else:
            torch.nn.utils.clip_grad_value_(module.parameters(), threshold)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
