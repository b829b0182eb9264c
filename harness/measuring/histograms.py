"""``--weight-histograms``: every parameter's histogram to TensorBoard at each training epoch end.

Written at the epoch edge, where the measuring clock is paused, so the histograms cost wall time
(a copy of every parameter to the host) but not samples/s. Only rank 0 writes, like the logger.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override


class WeightHistograms(pl.Callback):
    """``add_histogram("weights/<name>", ...)`` on each TensorBoard logger, once per epoch."""

    @override
    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        for name, parameter in pl_module.named_parameters():
            values = parameter.detach().float().cpu()
            for logger in loggers:
                logger.experiment.add_histogram(f"weights/{name}", values, global_step=trainer.global_step)
