"""The validation curve of a run: val loss against training time and samples seen.

Recorded at every validation during fit (an epoch edge, where the clock is paused anyway), so that
reports can draw loss curves and compute time-to-target without re-reading logs.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

from harness.measuring.measure import BlockTimer
from harness.measuring.metrics import logged_value


class ValCurve(pl.Callback):
    """Appends one point per validation: epoch, optimizer step, samples and time so far, val loss."""

    def __init__(self, timer: BlockTimer, monitor: str = "val_loss", fallback: str | None = None) -> None:
        self.timer = timer
        self.monitor = monitor
        self.fallback = fallback  # read when ``monitor`` is not logged (--monitor of an imported module)
        self.points: list[dict[str, Any]] = []
        self._fit_started = 0.0

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = logged_value(trainer.callback_metrics, self.monitor)  # val_loss_epoch when logged on_step too
        if value is None and self.fallback:
            value = logged_value(trainer.callback_metrics, self.fallback)
        if value is None:
            return
        self.points.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "samples": self.timer.samples_seen,
                "train_s": self.timer.train_seconds,
                "fit_s": time.perf_counter() - self._fit_started,
                self.monitor: float(value),
            }
        )
