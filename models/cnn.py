"""A small CNN digit classifier: the network of PyTorch's MNIST example, with accuracy via torchmetrics.

Convolutions make it a different kind of load from the autoencoder's tiny matmuls: on a GPU this is
where channels-last and mixed precision start to matter, and where a slow input pipeline shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from harness.spec import RunSpec
from harness.workload import Workload, register_workload


class DigitCNN(nn.Module):
    """conv32-conv64-maxpool-fc128-fc10, as in pytorch/examples' mnist/main.py (plain PyTorch)."""

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3), nn.ReLU(), nn.Conv2d(width, 2 * width, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(dropout)
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 12 * 12, hidden), nn.ReLU(), nn.Dropout(2 * dropout), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LitDigitCNN(pl.LightningModule):
    """Cross-entropy training; val/test loss and accuracy logged per epoch."""

    def __init__(self, lr: float = 1e-3, batch_size: int = 64, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.save_hyperparameters()
        # extra optimizer arguments a trick may set before fit (fused-optimizer: fused=True or foreach=...)
        self.optimizer_options: dict[str, Any] = {}
        self.lr = lr
        self.batch_size = batch_size
        self.net = DigitCNN(width, hidden)
        self.val_acc = MulticlassAccuracy(num_classes=10)
        self.test_acc = MulticlassAccuracy(num_classes=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def classification_loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # No self.log("train_loss") here: the harness writes each timing block's mean training loss
        # to the logger at the block edge, outside the measured time (see harness.measuring.measure).
        return self.classification_loss(batch)

    def _evaluate(self, batch: Any, stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}_loss", F.cross_entropy(logits, y), sync_dist=True)
        accuracy(logits, y)
        self.log(f"{stage}_acc", accuracy, on_step=False, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch[0]).argmax(dim=1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr, **self.optimizer_options)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@register_workload
@dataclass
class CNNWorkload(Workload):
    name = "cnn"
    summary = "Small CNN digit classifier (2 conv + 2 fc, pytorch/examples' MNIST net), loss and accuracy."

    width: int = 32
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.width < 1 or self.hidden < 1:
            raise ValueError(f"width and hidden must be >= 1, got width={self.width}, hidden={self.hidden}")

    def build_module(self, spec: RunSpec) -> LitDigitCNN:
        return LitDigitCNN(lr=spec.lr, batch_size=spec.batch_size, width=self.width, hidden=self.hidden)

    def checkpoint_blocks(self, module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        """The convolutional feature stack: its activations (64 x 24 x 24 per image) are most of the memory."""
        assert isinstance(module, LitDigitCNN)
        return [("net.features", module.net.features)]

    def plain_loss(self, module: pl.LightningModule, batch: Any) -> torch.Tensor:
        assert isinstance(module, LitDigitCNN)
        return module.classification_loss(batch)
