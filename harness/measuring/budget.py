"""A step budget that ends inside an epoch still ends with a validation.

Lightning validates at epoch ends (``check_val_every_n_epoch=1``); a ``--max-steps`` budget that stops
in the middle of an epoch therefore stops without one, and whatever watches the validation metric
during fit breaks: ``EarlyStopping`` and ``ModelCheckpoint(monitor="val_loss")`` find no ``val_loss``
(the lr-finder and early-stopping rows of ``--max-steps 40`` on an 82-batch epoch failed so). When the
budget's last optimizer step lands before the epoch's last batch, this callback sets
``trainer.should_stop``, Lightning's own way for a callback to end fit, and Lightning then runs the
validation loop for that batch (``_TrainingEpochLoop._should_check_val_fx`` validates when fit is told
to stop) before it stops, as it would have at the budget's end anyway.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class ValidateAtBudgetEnd(pl.Callback):
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            trainer.should_stop = True
