"""Gradient accumulation: sum gradients over k batches, then take one optimizer step.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#accumulate-gradients
With the same micro-batch, the effective batch grows k-fold for the memory of one micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.trick import Setup, Trick, register_trick


@register_trick
@dataclass
class GradAccumulation(Trick):
    name = "grad-accumulation"
    summary = "Accumulate gradients over k batches per optimizer step: Trainer(accumulate_grad_batches=k)."
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#accumulate-gradients"

    k: int = 4

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def apply(self, setup: Setup) -> None:
        setup.trainer_kwargs.update(accumulate_grad_batches=self.k)
        batch_size = setup.datamodule.batch_size
        setup.details.update(accumulate_grad_batches=self.k, effective_batch_size=batch_size * self.k)
