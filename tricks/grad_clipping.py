"""Gradient clipping: bound the gradient before each optimizer step.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#gradient-clipping
Clipping by the global L2 norm (Pascanu et al., 2013, https://arxiv.org/abs/1211.5063) keeps one
bad batch from throwing the weights far; it costs one extra pass over the gradients per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harness.refusals import refuse_manual_optimization
from harness.trick import Setup, Trick, register_trick

if TYPE_CHECKING:
    from harness.parity import PlainLoop


@register_trick
@dataclass
class GradClipping(Trick):
    name = "grad-clipping"
    summary = "Clip the gradients (global norm by default) before each optimizer step: Trainer(gradient_clip_val=...)."
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#gradient-clipping"
    trainer_args = frozenset({"gradient_clip_val", "gradient_clip_algorithm"})
    helps_when = "training is unstable (loss spikes, exploding gradients)"

    value: float = 1.0
    algorithm: Literal["norm", "value"] = "norm"

    def __post_init__(self) -> None:
        if not self.value > 0:
            raise ValueError(f"value must be > 0, got {self.value}")

    def apply(self, setup: Setup) -> None:
        refuse_manual_optimization(
            self.name, setup.module, "Automatic gradient clipping is not supported for manual optimization",
            "clip in your training_step with self.clip_gradients(optimizer, gradient_clip_val=...)",
        )
        setup.trainer_kwargs.update(gradient_clip_val=self.value, gradient_clip_algorithm=self.algorithm)
        setup.details.update(gradient_clip_val=self.value, gradient_clip_algorithm=self.algorithm)

    def plain_equivalent(self, loop: PlainLoop) -> None:
        """``clip_grad_norm_`` (or ``clip_grad_value_``) before each optimizer step, after unscaling under fp16."""
        loop.clip = (self.algorithm, self.value)
        function = "clip_grad_norm_" if self.algorithm == "norm" else "clip_grad_value_"
        loop.changes.append(f"torch.nn.utils.{function}(parameters, {self.value:g}) before each step")
