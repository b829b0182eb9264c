"""What the measuring callback itself costs per training step, as a share of the cheapest real step.

The hooks run on every batch inside the measured window, so their cost must be negligible next to
the smallest step the harness measures: the seed autoencoder at batch 256 on CPU, timed here in the
same process with a plain PyTorch loop.
"""

from __future__ import annotations

import time

import torch

from harness.measuring.measure import ThroughputMeter
from models.autoencoder import LitAutoEncoder

MAX_SHARE = 0.03


def plain_step_seconds(steps: int = 60) -> float:
    torch.manual_seed(0)
    module = LitAutoEncoder()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    batch = (torch.rand(256, 1, 28, 28), torch.zeros(256, dtype=torch.long))
    for i in range(steps + 10):
        if i == 10:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        module.reconstruction_loss(batch).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def test_meter_hooks_cost_per_step(benchmark) -> None:
    meter = ThroughputMeter(block_steps=10, warmup_blocks=1)
    batch = (torch.zeros(256, 1, 28, 28), torch.zeros(256, dtype=torch.long))
    outputs = {"loss": torch.tensor(0.5)}

    def one_step() -> None:
        meter.on_train_batch_start(None, None, batch, 0)  # type: ignore[arg-type]
        meter.on_train_batch_end(None, None, outputs, batch, 0)  # type: ignore[arg-type]

    benchmark.pedantic(one_step, rounds=2000, iterations=10, warmup_rounds=50)
    hook_s = benchmark.stats.stats.median
    step_s = plain_step_seconds()
    share = hook_s / step_s
    benchmark.extra_info.update(hook_us=hook_s * 1e6, plain_step_us=step_s * 1e6, share=share)
    print(f"\nmeter hooks: {hook_s * 1e6:.1f} us/step = {share:.2%} of a plain autoencoder step at batch 256")
    assert share < MAX_SHARE
