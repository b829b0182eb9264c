"""Fused or foreach optimizer: the same Adam/AdamW update, computed in fewer, larger kernels.

PyTorch docs: https://pytorch.org/docs/stable/optim.html#algorithms (the ``foreach`` and ``fused``
implementations). ``for-loop`` updates one parameter at a time, ``foreach`` groups the tensors into
multi-tensor kernels (torch's default on CUDA), ``fused`` does the whole update in one kernel per
group (CUDA, and CPU since torch 2.4). The optimizer belongs to the module's ``configure_optimizers``:
the built-in workloads take extra optimizer arguments from ``module.optimizer_options``, which this
trick sets; an imported module without that seam is skipped with the reason. The row records what
the optimizer Lightning trained with reports (``defaults["fused"]``, ``defaults["foreach"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick

OPTIONS: dict[str, dict[str, Any]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True, "fused": False},
    "for-loop": {"foreach": False, "fused": False},
}


class OptimizerSeen(pl.Callback):
    """Records which implementation the optimizer Lightning built uses, in the row's details."""

    def __init__(self, details: dict[str, Any]) -> None:
        self.details = details

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        self.details["optimizer"] = type(optimizer).__name__
        self.details["optimizer_fused"] = optimizer.defaults.get("fused")
        self.details["optimizer_foreach"] = optimizer.defaults.get("foreach")


@register_trick
@dataclass
class FusedOptimizer(Trick):
    name = "fused-optimizer"
    summary = "The optimizer's fused (or foreach / for-loop) implementation, through the workload's optimizer_options seam."
    source = "https://pytorch.org/docs/stable/optim.html#algorithms"

    impl: Literal["fused", "foreach", "for-loop"] = "fused"

    def apply(self, setup: Setup) -> None:
        options = getattr(setup.module, "optimizer_options", None)
        if not isinstance(options, dict):
            raise TrickSkipped(
                f"fused-optimizer: {type(setup.module).__name__} builds its optimizer in configure_optimizers with no "
                "optimizer_options seam to pass fused/foreach through (the built-in workloads have one)"
            )
        options.update(OPTIONS[self.impl])
        setup.callbacks.append(OptimizerSeen(setup.details))
        setup.details["optimizer_impl"] = self.impl
