"""SWA: the model ends with the equal average of the snapshots, and BatchNorm statistics are
recomputed for those averaged weights (Lightning issue 14866), on a model that has BatchNorm."""

from __future__ import annotations

import copy
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from harness.spec import RunSpec
from harness.worker import execute
from harness.workload import WORKLOADS, Workload


class BatchNormAutoEncoder(pl.LightningModule):
    """A small autoencoder with a BatchNorm layer, the case where averaged weights need fresh statistics."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(28 * 28, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 28 * 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def loss(self, batch: Any) -> torch.Tensor:
        return F.mse_loss(self(batch[0]), batch[0].flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class BatchNormWorkload(Workload):
    name = "test-batchnorm-ae"
    summary = "Test only: an autoencoder with BatchNorm1d."

    def build_module(self, spec: RunSpec) -> pl.LightningModule:
        return BatchNormAutoEncoder(lr=spec.lr)


@pytest.fixture
def batchnorm_workload(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registered for one test only, so that tests parametrised over every workload never see it."""
    WORKLOADS.load()
    monkeypatch.setitem(WORKLOADS._entries, BatchNormWorkload.name, BatchNormWorkload)
    return BatchNormWorkload.name


def bn_of(module: pl.LightningModule) -> nn.BatchNorm1d:
    return next(m for m in module.modules() if isinstance(m, nn.BatchNorm1d))


class SWAProbe(pl.Callback):
    """Keeps the weights at every epoch end, the BatchNorm statistics before averaging, the batches
    of the epoch after the last one (Lightning's BatchNorm pass) and the final module."""

    def __init__(self, last_epoch: int) -> None:
        self.last_epoch = last_epoch
        self.weights: dict[int, list[torch.Tensor]] = {}
        self.bn_batches: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]
        if trainer.current_epoch == self.last_epoch:
            bn = bn_of(pl_module)
            self.stats_before = (bn.running_mean.clone(), bn.running_var.clone())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch == self.last_epoch + 1:
            self.bn_batches.append(batch[0].clone())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.final = copy.deepcopy(pl_module)


def test_batchnorm_model_gets_averaged_weights_and_recomputed_statistics(make_spec, batchnorm_workload: str) -> None:
    # 4 epochs, swa_epoch_start 0.5: snapshots at the starts of epochs 1, 2 and 3 (ends of 0, 1, 2).
    params = {"swa": {"budget_epochs": "4", "swa_epoch_start": "0.5"}}
    probe = SWAProbe(last_epoch=3)
    spec = make_spec(["swa"], workload=batchnorm_workload, max_epochs=2, trick_params=params)
    result = execute(spec, extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    details = result.details
    assert (details["swa_first_epoch"], details["swa_last_epoch"], details["swa_snapshots"]) == (1, 3, 3)
    assert details["weights_averaged"] and details["bn_recomputed"] and details["has_batchnorm"]
    assert "warnings" not in details

    final = list(probe.final.parameters())
    # The weights are the equal average of the snapshots, not the weights the last epoch ended with.
    for index, param in enumerate(final):
        mean = torch.stack([probe.weights[epoch][index] for epoch in (0, 1, 2)]).mean(0)
        torch.testing.assert_close(param.detach(), mean, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(p, q) for p, q in zip(final, probe.weights[3]))

    # The BatchNorm statistics are those of the averaged weights over the training data: PyTorch's
    # own update_bn over the same batches gives the same numbers...
    bn = bn_of(probe.final)
    assert len(probe.bn_batches) == 18 and bn.momentum == 0.1  # momentum restored after the pass
    reference = copy.deepcopy(probe.final)
    update_bn(probe.bn_batches, reference)
    torch.testing.assert_close(bn.running_mean, bn_of(reference).running_mean)
    torch.testing.assert_close(bn.running_var, bn_of(reference).running_var)
    # ...and they are not the statistics the last trained weights had.
    before_mean, before_var = probe.stats_before
    assert not torch.allclose(bn.running_mean, before_mean, atol=1e-3)
    assert not torch.allclose(bn.running_var, before_var, atol=1e-3)


def test_autoencoder_row_records_the_average_and_its_loss(make_spec) -> None:
    result = execute(make_spec(["swa"], max_epochs=1))
    assert result.status == "ok", result.reason
    details = result.details
    assert details["budget_epochs"] == 10 and result.epochs == 10  # the default budget, not the run's 1 epoch
    assert details["swa_lrs"] == 1e-3 and details["swa_epoch_start"] == 0.8
    assert details["swa_snapshots"] == 3 and details["weights_averaged"] and details["weights_shift_l2"] > 0
    assert details["bn_recomputed"] is None  # no BatchNorm in the seed autoencoder
    assert details["averaged_val_loss"] == result.val_loss != details["last_weights_val_loss"]


def test_a_budget_too_short_to_average_is_recorded(make_spec) -> None:
    result = execute(make_spec(["swa"], max_epochs=1, trick_params={"swa": {"budget_epochs": "1"}}))
    assert result.status == "ok", result.reason
    assert result.details["swa_snapshots"] == 1
    assert any("too few to mean anything" in warning for warning in result.details["warnings"])
