"""Stochastic Weight Averaging: average the weights of the last epochs and train with an SWA schedule.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#stochastic-weight-averaging
(Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization",
https://arxiv.org/abs/1803.05407). Lightning's ``StochasticWeightAveraging`` callback swaps the LR
schedule for ``SWALR`` from ``swa_epoch_start`` on, folds the weights into a running average at the
start of every epoch from then to the last, and copies the average into the model when fit ends.

What this trick guards and records:
- An average of one snapshot is no average: SWA needs several epochs past its start. The default
  budget is ``budget_epochs`` (10) epochs when the run's own budget is shorter, and a row whose
  budget still yields fewer than two snapshots says so in its warnings.
- BatchNorm statistics belong to the weights they were measured with; the averaged weights need
  fresh ones (Lightning issue 14866). Lightning adds one forward-only epoch over the training data
  for that, with cumulative statistics (``momentum=None``, the fix of 14866); the row records
  whether that epoch ran (``bn_recomputed``), and the tests check the statistics it leaves.
- When fit ends before SWA's last epoch (early stopping, a step limit), Lightning keeps the last
  weights, not the average: recorded as ``weights_averaged: false`` with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging
from typing_extensions import override

from harness.errors import TrickSkipped
from harness.measuring.metrics import logged_value
from harness.refusals import optimizer_counts, refuse_several_optimizers
from harness.trick import Conflict, Setup, Trick, add_warning, register_trick

MIN_SNAPSHOTS = 2


def swa_epochs(swa_epoch_start: int | float, max_epochs: int) -> tuple[int, int]:
    """The first and last 0-based epochs whose start folds the weights into the average, as Lightning counts."""
    start = int(max_epochs * swa_epoch_start) if isinstance(swa_epoch_start, float) else swa_epoch_start
    return max(start - 1, 0), max_epochs - 1


@register_trick
@dataclass
class SWA(Trick):
    name = "swa"
    changes_budget = True  # judged on time to target and final loss (harness.report.verdicts)
    summary = (
        "Stochastic Weight Averaging: StochasticWeightAveraging(swa_lrs, swa_epoch_start) over a budget of "
        "at least budget_epochs epochs; BatchNorm statistics recomputed for the averaged weights."
    )
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#stochastic-weight-averaging"
    tests_final_weights = (
        "SWA copies the average into the model when fit ends, after the last epoch checkpoint: "
        "best.ckpt and last.ckpt hold unaveraged weights"
    )

    swa_lrs: float = 1e-3
    swa_epoch_start: float = 0.8
    annealing_epochs: int = 10
    annealing_strategy: Literal["cos", "linear"] = "cos"
    budget_epochs: int = 10

    def __post_init__(self) -> None:
        if not self.swa_lrs > 0:
            raise ValueError(f"swa_lrs must be > 0, got {self.swa_lrs}")
        start = self.swa_epoch_start
        if not (0 <= start < 1 or (start >= 1 and float(start).is_integer())):
            raise ValueError(
                f"swa_epoch_start must be a fraction of the budget in [0, 1) or a whole epoch number >= 1, got {start}"
            )
        if self.annealing_epochs < 1:
            raise ValueError(f"annealing_epochs must be >= 1, got {self.annealing_epochs}")
        if self.annealing_strategy not in ("cos", "linear"):
            raise ValueError(f"annealing_strategy {self.annealing_strategy!r} is not valid; use any of: cos, linear")
        if self.budget_epochs < 1:
            raise ValueError(f"budget_epochs must be >= 1, got {self.budget_epochs}")

    @property
    def epoch_start(self) -> int | float:
        """Lightning reads a float as a share of max_epochs and an int as a 1-based epoch number."""
        return int(self.swa_epoch_start) if self.swa_epoch_start >= 1 else float(self.swa_epoch_start)

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        conflicts = super().conflicts(others)
        if any(other.name == "early-stopping" for other in others):
            conflicts.append(
                Conflict(
                    "warn",
                    "early stopping may end the fit before SWA's last epoch (or before it starts); Lightning then "
                    "keeps the last weights, not the average: check weights_averaged in the row",
                )
            )
        return conflicts

    def apply(self, setup: Setup) -> None:
        refuse_several_optimizers(self.name, setup.module, "SWA currently works with 1 `optimizer`.")
        counts = optimizer_counts(setup.module)
        if counts is not None and counts[1] > 1:
            raise TrickSkipped(
                f"swa: {type(setup.module).__name__}.configure_optimizers returns {counts[1]} LR schedulers, and Lightning "
                "says: \"SWA currently not supported for more than 1 `lr_scheduler`.\""
            )
        baseline = setup.spec.max_epochs
        budget = max(setup.trainer_kwargs.get("max_epochs") or baseline, self.budget_epochs)
        setup.trainer_kwargs["max_epochs"] = budget
        callback = StochasticWeightAveraging(
            swa_lrs=self.swa_lrs,
            swa_epoch_start=self.epoch_start,
            annealing_epochs=self.annealing_epochs,
            annealing_strategy=self.annealing_strategy,
        )
        # The recorder goes first: its hooks then see the weights before SWA replaces them.
        setup.callbacks.extend([SWARecorder(callback, self.epoch_start, setup.details), callback])
        setup.details.update(
            swa_lrs=self.swa_lrs,
            swa_epoch_start=self.epoch_start,
            annealing_epochs=self.annealing_epochs,
            annealing_strategy=self.annealing_strategy,
            baseline_epochs=baseline,
            budget_epochs=budget,
        )
        if setup.trainer_kwargs.get("max_steps", -1) != -1:
            add_warning(
                setup.details,
                f"swa: max_steps={setup.trainer_kwargs['max_steps']} may end the fit before SWA's last epoch",
            )


class SWARecorder(pl.Callback):
    """Writes what SWA really did into the row: snapshots, whether the average was used, the losses.

    Snapshot copies and comparisons happen at epoch and fit edges, where the timer is paused.
    """

    def __init__(self, swa: StochasticWeightAveraging, epoch_start: int | float, details: dict[str, Any]) -> None:
        self.swa = swa
        self.epoch_start = epoch_start
        self.details = details
        self.first = self.last = 0
        self.last_weights: list[torch.Tensor] | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert trainer.max_epochs is not None
        self.first, self.last = swa_epochs(self.epoch_start, trainer.max_epochs)
        snapshots = max(self.last - self.first + 1, 0)
        has_bn = StochasticWeightAveraging.pl_module_contains_batch_norm(pl_module)
        self.details.update(swa_first_epoch=self.first, swa_last_epoch=self.last, has_batchnorm=has_bn)
        if snapshots < MIN_SNAPSHOTS:
            add_warning(
                self.details,
                f"swa: a budget of {trainer.max_epochs} epochs with swa_epoch_start={self.epoch_start} averages "
                f"{snapshots} snapshot(s), too few to mean anything; raise swa.budget_epochs or lower swa.swa_epoch_start",
            )
        if has_bn:
            self.details["swa_note"] = "throughput includes SWA's extra forward-only epoch that recomputes BatchNorm statistics"

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.last:
            self.last_weights = [p.detach().to("cpu", copy=True) for p in pl_module.parameters()]

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = logged_value(trainer.callback_metrics, "val_loss")
        if value is None or trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and trainer.current_epoch == self.last:
            self.details["last_weights_val_loss"] = float(value)
        elif trainer.state.fn == "validate":
            self.details["averaged_val_loss"] = float(value) if self.details.get("weights_averaged") else None

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        snapshots = int(self.swa.n_averaged) if self.swa.n_averaged is not None else 0
        averaged = False
        shift = None
        if self.last_weights is not None and snapshots > 0:
            now = [p.detach().to("cpu") for p in pl_module.parameters()]
            shift = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(now, self.last_weights)))
            averaged = shift > 0
        has_bn = self.details.get("has_batchnorm", False)
        self.details.update(
            swa_snapshots=snapshots,
            weights_averaged=averaged,
            weights_shift_l2=shift,
            bn_recomputed=(averaged and trainer.current_epoch == self.last + 2) if has_bn else None,
        )
        self.last_weights = None
        if not averaged:
            add_warning(
                self.details,
                f"swa: fit ended after {trainer.current_epoch} epoch(s), before SWA's last epoch {self.last + 1}: "
                "Lightning kept the last weights, not the average",
            )
        elif has_bn and not self.details["bn_recomputed"]:
            add_warning(self.details, "swa: the BatchNorm statistics were not recomputed for the averaged weights")
