"""grad-clipping and grad-accumulation really change what the optimizer does."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from harness.worker import execute


class OptimizerProbe(pl.Callback):
    """Records, after every optimizer step, the global gradient norm the step used."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

        trainer.optimizers[0].register_step_post_hook(record)


def test_clipping_bounds_the_gradient_norm_the_optimizer_sees(make_spec) -> None:
    clip = 0.01
    baseline, clipped = OptimizerProbe(), OptimizerProbe()
    assert execute(make_spec(max_epochs=1), extra_callbacks=[baseline]).status == "ok"
    spec = make_spec(["grad-clipping"], max_epochs=1, trick_params={"grad-clipping": {"value": str(clip)}})
    result = execute(spec, extra_callbacks=[clipped])
    assert result.status == "ok", result.reason
    assert result.details["gradient_clip_val"] == clip
    assert max(baseline.norms) > 5 * clip  # without the trick the norms exceed the clip value...
    assert max(clipped.norms) <= clip * (1 + 1e-4)  # ...with it they never do
    assert len(clipped.norms) == len(baseline.norms) == 18


def test_accumulation_takes_one_optimizer_step_per_k_batches(make_spec) -> None:
    probe = OptimizerProbe()
    # digits at batch 36: 1150 / 36 -> 32 batches per epoch (the last one partial), divisible by k=4
    spec = make_spec(["grad-accumulation"], max_epochs=1, batch_size=36, trick_params={"grad-accumulation": {"k": "4"}})
    result = execute(spec, extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    assert result.steps == 32
    assert result.optimizer_steps == len(probe.norms) == 32 // 4
    assert result.details["accumulate_grad_batches"] == 4
    assert result.details["effective_batch_size"] == 36 * 4
