"""Early stopping: stop when the validation loss has stopped improving, within a larger epoch budget.

Lightning docs: https://lightning.ai/docs/pytorch/stable/common/early_stopping.html
The ``EarlyStopping`` callback checks ``val_loss`` after every validation and stops the fit when it
has not improved by more than ``min_delta`` for ``patience`` checks; ``Trainer(min_epochs=...)``
keeps it from stopping before a floor. Run within the baseline's budget it could only ever save
time, so the budget is ``budget_factor`` times larger, and the row says what that bought or cost:
epochs run, why it stopped, the best loss, and the time saved against running the whole budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities.model_helpers import is_overridden
from typing_extensions import override

from harness.errors import TrickSkipped
from harness.measuring.metrics import logged_name
from harness.trick import Setup, Trick, add_warning, register_trick

MONITOR = "val_loss"  # the default of --monitor (RunSpec.monitor)


@register_trick
@dataclass
class EarlyStoppingTrick(Trick):
    name = "early-stopping"
    changes_budget = True  # judged on time to target and final loss (harness.report.verdicts)
    summary = (
        "EarlyStopping on val_loss (patience, min_delta, mode) within budget_factor x the epoch budget; "
        "Trainer(min_epochs) as a floor."
    )
    source = "https://lightning.ai/docs/pytorch/stable/common/early_stopping.html"
    trainer_args = frozenset({"min_epochs"})

    patience: int = 3
    min_delta: float = 0.0
    mode: Literal["min", "max"] = "min"
    budget_factor: float = 3.0
    min_epochs: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode {self.mode!r} is not valid; use any of: min, max")
        if not self.budget_factor >= 1:
            raise ValueError(f"budget_factor must be >= 1 (a multiple of --max-epochs), got {self.budget_factor}")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0 (0: no floor), got {self.min_epochs}")

    def apply(self, setup: Setup) -> None:
        monitor = setup.spec.monitor or MONITOR
        missing = [
            f"{type(owner).__name__} defines no {name}"
            for owner, name, base in (
                (setup.module, "validation_step", pl.LightningModule),
                (setup.datamodule, "val_dataloader", pl.LightningDataModule),
            )
            if not is_overridden(name, owner, base)
        ]
        if missing:
            raise TrickSkipped(f"early-stopping needs a validation set logging {monitor!r}: {'; '.join(missing)}")
        baseline = setup.spec.max_epochs
        budget = max(setup.trainer_kwargs.get("max_epochs") or baseline, math.ceil(baseline * self.budget_factor))
        setup.trainer_kwargs["max_epochs"] = budget
        if self.min_epochs:
            setup.trainer_kwargs["min_epochs"] = self.min_epochs
        callback = EarlyStopping(monitor=monitor, patience=self.patience, min_delta=self.min_delta, mode=self.mode)
        setup.callbacks.extend(
            [MonitorCheck(monitor, callback), callback, EarlyStoppingRecorder(callback, budget, baseline, setup.details)]
        )
        setup.details.update(
            monitor=monitor,
            patience=self.patience,
            min_delta=self.min_delta,
            mode=self.mode,
            min_epochs=self.min_epochs,
            baseline_epochs=baseline,
            budget_epochs=budget,
        )
        if self.min_epochs > budget:
            add_warning(setup.details, f"early-stopping: min_epochs={self.min_epochs} exceeds the budget of {budget} epochs")
        if setup.trainer_kwargs.get("max_steps", -1) != -1:
            add_warning(
                setup.details,
                f"early-stopping: max_steps={setup.trainer_kwargs['max_steps']} bounds the run before the epoch budget",
            )


class MonitorCheck(pl.Callback):
    """Skips the row when the first validation logs no ``monitor``: nothing to stop on.

    It runs before ``EarlyStopping`` (which would raise a RuntimeError there, its ``strict`` check),
    so that the row says what the module lacks and which metrics it does log (``--monitor``).
    A metric logged with ``on_step=True`` too is held as ``NAME_epoch`` (harness.measuring.metrics): the
    early stopping callback is pointed at that epoch mean (``NAME`` would be the last batch's value).
    """

    def __init__(self, monitor: str, early_stopping: EarlyStopping | None = None) -> None:
        self.monitor = monitor
        self.early_stopping = early_stopping

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        name = logged_name(trainer.callback_metrics, self.monitor)
        if name is not None:
            if self.early_stopping is not None and self.early_stopping.monitor != name:
                self.early_stopping.monitor = name
            return
        logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
        raise TrickSkipped(
            f"early-stopping: validation logs no {self.monitor!r} (logged: {logged}); choose one with --monitor"
        )


class EarlyStoppingRecorder(pl.Callback):
    """Writes into the row how the fit ended, once it has (the callback's state is final by then)."""

    def __init__(self, early_stopping: EarlyStopping, budget: int, baseline: int, details: dict[str, Any]) -> None:
        self.early_stopping = early_stopping
        self.budget = budget
        self.baseline = baseline
        self.details = details
        self._started = 0.0

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_s = time.perf_counter() - self._started
        epochs = trainer.current_epoch
        stopped = epochs < self.budget
        message = getattr(self.early_stopping, "stopping_reason_message", None)
        if stopped:
            reason = message or f"fit ended after {epochs} of {self.budget} epochs, not by early stopping"
        else:
            reason = f"ran the whole budget of {self.budget} epochs"
        per_epoch = fit_s / epochs if epochs else math.nan
        best = float(self.early_stopping.best_score)
        self.details.update(
            epochs_run=epochs,
            stopped_early=stopped,
            stopped_reason=reason,
            best_val_loss=best if math.isfinite(best) else None,
            # estimates from this run's own time per epoch (validation included)
            saved_s_vs_budget=per_epoch * (self.budget - epochs),
            extra_s_vs_baseline=per_epoch * (epochs - self.baseline),
        )
