"""The harness adds no per-step host synchronisation to the measured window.

Every host read of a tensor (``item``, ``float``, ``bool``, ``tolist``) during training epochs is
counted, validation excluded. Reads by torch's optimizers are left out: Adam reads its CPU-side step
counter every step in plain PyTorch too, and that never waits for the device. What remains must be
per block, per logging step or per epoch: far fewer than one per training step.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterator

import lightning.pytorch as pl
import pytest
import torch

from harness.worker import execute

READS = ("item", "__float__", "__bool__", "tolist", "__int__")


class TrainingWindow(pl.Callback):
    """True while training batches run (validation switched off)."""

    active = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = trainer.training

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = False


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original=original, _name=name, **kwargs: object) -> object:
            if TrainingWindow.active:
                caller = traceback.extract_stack(limit=3)[0].filename
                if "torch/optim/" not in caller:
                    counts[f"{_name} {caller.rsplit('site-packages/', 1)[-1]}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield counts
    TrainingWindow.active = False


def test_host_reads_happen_per_block_not_per_step(make_spec, host_reads: collections.Counter[str]) -> None:
    block_steps = 6
    result = execute(make_spec(max_epochs=2, block_steps=block_steps), extra_callbacks=[TrainingWindow()])
    assert result.status == "ok", result.reason
    steps, epochs = result.steps, result.epochs
    assert steps == 36
    budget = 2 * steps // block_steps + 2 * epochs  # block edges + logger writes + epoch ends
    assert sum(host_reads.values()) <= budget, host_reads
    assert sum(host_reads.values()) > 0  # the probe does see the reads that do happen
