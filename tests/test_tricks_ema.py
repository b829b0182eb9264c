"""ema: Lightning's EMAWeightAveraging really averages, and validation, the final weights and the
checkpoints are the average's; ema+swa is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from harness.errors import UserError
from harness.runfolder.plan import check_trick_runs
from harness.worker import execute


class WeightsSeen(pl.Callback):
    """The weights at the end of the last training batch and at the start of each validation epoch."""

    def __init__(self) -> None:
        self.trained: list[torch.Tensor] = []
        self.validated: list[torch.Tensor] = []

    @staticmethod
    def _flat(module: pl.LightningModule) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.trained = [self._flat(pl_module)]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.validated.append(self._flat(pl_module))


def test_validation_and_the_checkpoints_see_the_average_not_the_raw_weights(make_spec, tmp_path: Path) -> None:
    seen = WeightsSeen()
    spec = make_spec(["ema"], trick_params={"ema": {"decay": "0.9"}}, max_epochs=2)
    result = execute(spec, extra_callbacks=[seen])
    assert result.status == "ok", result.reason
    # the callbacks run in order: EMA's swap comes before this probe's hook
    assert seen.validated and not torch.equal(seen.validated[-1], seen.trained[-1])
    best = torch.load(Path(spec.run_dir) / result.checkpoints["best"], weights_only=False)  # this test's own file
    assert "current_model_state" in best  # the raw weights, put aside by EMAWeightAveraging
    raw = torch.cat([v.flatten() for v in best["current_model_state"].values() if v.is_floating_point()])
    averaged = torch.cat([v.flatten() for v in best["state_dict"].values() if v.is_floating_point()])
    assert not torch.equal(raw, averaged)
    assert result.details["ema_decay"] == 0.9 and "average" in result.details["ema_weights_used_by"]


def test_ema_with_swa_is_refused_with_the_reason() -> None:
    with pytest.raises(UserError, match="ema and swa each average the weights"):
        check_trick_runs([["ema", "swa"]], {})


def test_a_decay_outside_0_1_is_refused() -> None:
    with pytest.raises(UserError, match="decay must be in"):
        check_trick_runs([["ema"]], {"ema": {"decay": "1.5"}})
