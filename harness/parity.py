"""A plain PyTorch training loop over the same model, data, batch size and device as the harness.

It answers "how much does the harness (Lightning included) cost?": the parity check runs the
harness's baseline and this loop in two fresh processes under one invocation and reports the ratio
of their throughputs. Both use the same BlockTimer, so the ratio compares loops, not stopwatches.
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from harness import env
from harness.data import TensorDataModule
from harness.measure import BlockTimer, batch_size_of, peak_memory, reset_peak_memory, throughput_fields
from harness.spec import Result, RunSpec
from harness.workload import WORKLOADS

PLAIN_LABEL = "plain-pytorch"


def accelerator_device(accelerator: str) -> torch.device:
    return torch.device("cuda", 0) if accelerator == "gpu" else torch.device("cpu")


def execute_plain(spec: RunSpec) -> Result:
    """Train ``spec.workload`` with a hand-written loop: zero_grad, forward, backward, step, LR schedule."""
    started = time.perf_counter()
    device = accelerator_device(spec.accelerator)
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    workload = WORKLOADS.get(spec.workload).from_params(spec.workload_params)
    module = workload.build_module(spec).to(device)
    datamodule = workload.build_datamodule(spec)
    if not isinstance(datamodule, TensorDataModule):
        raise TypeError(f"the parity loop needs a TensorDataModule, got {type(datamodule).__name__}")
    datamodule.device = device
    datamodule.setup("fit")
    optim_conf = module.configure_optimizers()
    optimizer = optim_conf["optimizer"]
    scheduler = optim_conf["lr_scheduler"]["scheduler"]

    timer = BlockTimer(device, spec.block_steps, spec.warmup_blocks)
    reset_peak_memory(device)
    module.train()
    steps = 0
    fit_started = time.perf_counter()
    for _ in range(spec.max_epochs):
        for batch in datamodule.train_dataloader():
            if 0 <= spec.max_steps <= steps:
                break
            timer.resume()
            x, y = (t.to(device, non_blocking=True) for t in batch)
            optimizer.zero_grad(set_to_none=True)
            loss = workload.plain_loss(module, (x, y))
            loss.backward()
            optimizer.step()
            steps += 1
            timer.add_batch(batch_size_of(batch), loss)
        timer.end_epoch()
        scheduler.step()
        if 0 <= spec.max_steps <= steps:
            break
    timer.finish()
    fit_s = time.perf_counter() - fit_started
    peak, mem_kind = peak_memory(device)
    return Result(
        run_id=spec.run_id, trick=PLAIN_LABEL, workload=spec.workload, dataset=workload.dataset_label(spec),
        accelerator=spec.accelerator, repeat=spec.repeat, status="ok", seed=spec.seed,
        device_name=env.device_name(spec.accelerator), precision="32-true", batch_size=spec.batch_size,
        loader=datamodule.loader_used,
        **throughput_fields(timer.summary()),
        peak_mem_bytes=peak, mem_kind=mem_kind, train_loss=timer.final_train_loss,
        steps=steps, optimizer_steps=steps, epochs=spec.max_epochs,
        fit_s=fit_s, wall_s=time.perf_counter() - started,
    )
