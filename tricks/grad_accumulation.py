"""Gradient accumulation: sum gradients over k batches, then take one optimizer step.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#accumulate-gradients
Two uses that answer different questions, hence two modes:
- ``same-micro-batch``: the batch stays, the effective batch grows k-fold for the memory of one
  micro-batch (what ``Trainer(accumulate_grad_batches=k)`` alone does).
- ``same-effective-batch``: the micro-batch is divided by k so that each optimizer step sees the
  baseline's batch: the memory-saving use, which costs speed and should cost no loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import lightning.pytorch as pl

from harness.errors import TrickSkipped, UserError
from harness.refusals import refuse_manual_optimization
from harness.trick import Conflict, Setup, Trick, add_warning, register_trick

if TYPE_CHECKING:
    from harness.parity import PlainLoop

MODES = ("same-micro-batch", "same-effective-batch")


@register_trick
@dataclass
class GradAccumulation(Trick):
    name = "grad-accumulation"
    summary = (
        "Accumulate gradients over k batches per optimizer step: Trainer(accumulate_grad_batches=k); "
        "mode same-micro-batch (effective batch x k) or same-effective-batch (micro-batch / k)."
    )
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#accumulate-gradients"
    trainer_args = frozenset({"accumulate_grad_batches"})
    tune_order = 100  # after the finders, so that the recorded batch sizes are the ones training uses

    k: int = 4
    mode: Literal["same-micro-batch", "same-effective-batch"] = "same-micro-batch"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not valid; use any of: {', '.join(MODES)}")

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        conflicts = super().conflicts(others)
        if self.mode == "same-effective-batch" and any(other.name == "batch-size-finder" for other in others):
            conflicts.append(
                Conflict(
                    "refuse",
                    "batch-size-finder sets the micro-batch that grad-accumulation's same-effective-batch mode "
                    "divides by k, so neither the found size nor the effective batch would be what was asked; "
                    "use grad-accumulation.mode=same-micro-batch",
                )
            )
        return conflicts

    def apply(self, setup: Setup) -> None:
        refuse_manual_optimization(
            self.name, setup.module, "Automatic gradient accumulation is not supported for manual optimization",
            "accumulate in your training_step (step the optimizers every k batches)",
        )
        batch_size = getattr(setup.datamodule, "batch_size", None)  # an imported datamodule may have none
        if self.mode == "same-effective-batch":
            if batch_size is None:
                raise TrickSkipped(
                    f"grad-accumulation mode same-effective-batch divides the datamodule's batch_size by k: "
                    f"{type(setup.datamodule).__name__} has no batch_size attribute; use grad-accumulation.mode=same-micro-batch"
                )
            micro = batch_size // self.k
            if micro < 1:
                raise UserError(
                    f"grad-accumulation: k={self.k} is larger than the batch size {batch_size} in mode "
                    "same-effective-batch; lower k or raise --batch-size"
                )
            if micro * self.k != batch_size:
                add_warning(
                    setup.details,
                    f"grad-accumulation: batch {batch_size} is not divisible by k={self.k}; "
                    f"micro-batch {micro}, effective batch {micro * self.k}",
                )
            setup.datamodule.batch_size = micro
        setup.trainer_kwargs.update(accumulate_grad_batches=self.k)
        setup.details.update(accumulate_grad_batches=self.k, accumulation_mode=self.mode)
        self._record_batch(setup)

    def plain_equivalent(self, loop: PlainLoop) -> None:
        """Each loss divided by k, an optimizer step every k batches (and at the end of an epoch, as
        Lightning does); the micro-batch divided by k in mode same-effective-batch."""
        if self.mode == "same-effective-batch":
            micro = loop.batch_size // self.k
            if micro < 1:
                raise TrickSkipped(f"grad-accumulation: k={self.k} is larger than the batch size {loop.batch_size}")
            loop.batch_size = micro
        loop.accumulate = self.k
        loop.changes.append(f"loss / {self.k}, optimizer step every {self.k} batches of {loop.batch_size}")

    def tune(self, trainer: pl.Trainer, setup: Setup) -> None:
        """Not tuning: record the batch again once a batch size finder (tuned earlier) may have changed it."""
        self._record_batch(setup)

    def _record_batch(self, setup: Setup) -> None:
        micro = getattr(setup.datamodule, "batch_size", None)
        if micro is None:  # the datamodule's own loaders decide: the row's batch_size says what they served
            setup.details.update(micro_batch_size=None, effective_batch_size=f"{self.k} x the datamodule's batch")
            return
        setup.details.update(micro_batch_size=micro, effective_batch_size=micro * self.k)
