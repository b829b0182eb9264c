"""N-bit precision through ``Trainer(precision=...)``: 16-mixed, bf16-mixed and bf16-true.

Lightning docs: https://lightning.ai/docs/pytorch/stable/common/precision_basic.html
- ``16-mixed``: float16 autocast plus a gradient scaler; needs a CUDA GPU. On a CPU Lightning
  quietly runs bf16-mixed instead (a warning, nothing more), which would put a bf16 number under
  a 16-mixed label: the row is skipped with that reason instead.
- ``bf16-mixed``: bfloat16 autocast, float32 weights; no scaler (bf16 has float32's range).
- ``bf16-true``: the weights themselves are bfloat16: half the memory, less precise updates.
Whatever Lightning finally ran is checked against what was asked, so that no future silent
substitution can relabel a row either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import lightning.pytorch as pl
import torch

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick

if TYPE_CHECKING:
    from harness.parity import PlainLoop

SOURCE = "https://lightning.ai/docs/pytorch/stable/common/precision_basic.html"


def unsupported_reason(precision: str, accelerator: str) -> str:
    """Why ``precision`` cannot run honestly on ``accelerator``; empty when it can."""
    if accelerator == "cpu" and precision.startswith("16"):
        return (
            f"{precision} needs a CUDA GPU: on a CPU Lightning silently runs bf16-mixed instead, "
            "so this row would measure bf16 under a float16 label (see the bf16-mixed row)"
        )
    if accelerator == "gpu" and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        return f"{precision} needs a GPU with bfloat16 support; {torch.cuda.get_device_name()} has none"
    return ""


@dataclass
class _Precision(Trick):
    """Shared body of the precision variants: they differ only in the Trainer flag they set."""

    precision: ClassVar[str] = ""
    trainer_args = frozenset({"precision"})
    # the plain PyTorch form (harness.parity): autocast dtype, GradScaler, dtype of the weights
    plain_autocast: ClassVar[torch.dtype | None] = None
    plain_scaler: ClassVar[bool] = False
    plain_params: ClassVar[torch.dtype | None] = None

    def apply(self, setup: Setup) -> None:
        reason = unsupported_reason(self.precision, setup.accelerator)
        if reason:
            raise TrickSkipped(reason)
        setup.trainer_kwargs.update(precision=self.precision)
        setup.details.update(requested_precision=self.precision)

    def tune(self, trainer: pl.Trainer, setup: Setup) -> None:
        """Not tuning: the first moment the Trainer exists, check the precision it really chose."""
        ran = str(trainer.precision)
        setup.details.update(precision=ran)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # 16-mixed: Lightning's loss scaling, the part that keeps fp16 gradients from underflowing
            setup.details.update(grad_scaler=type(scaler).__name__)
        if ran != self.precision:
            raise TrickSkipped(f"asked for precision {self.precision} but Lightning chose {ran} on {setup.accelerator}")

    def plain_equivalent(self, loop: PlainLoop) -> None:
        """What Lightning's precision plugin does, by hand: ``torch.autocast`` (plus ``GradScaler``
        for float16), or the module and its floating inputs cast to bfloat16."""
        reason = unsupported_reason(self.precision, loop.accelerator)
        if reason:
            raise TrickSkipped(reason)
        if loop.precision != "32-true":
            raise TrickSkipped(f"{self.name}: the plain loop already runs {loop.precision}")
        loop.autocast_dtype, loop.grad_scaler, loop.param_dtype = self.plain_autocast, self.plain_scaler, self.plain_params
        if self.plain_params is not None:
            loop.changes.append(f"module.to({self.plain_params}), floating inputs cast to it")
        else:
            loop.changes.append(f"torch.autocast(dtype={self.plain_autocast})" + (" + torch.amp.GradScaler" if self.plain_scaler else ""))


@register_trick
@dataclass
class Fp16Mixed(_Precision):
    name = "16-mixed"
    summary = "float16 autocast with a gradient scaler: Trainer(precision='16-mixed'); CUDA only (skipped on CPU)."
    source = SOURCE
    precision = "16-mixed"
    plain_autocast, plain_scaler = torch.float16, True


@register_trick
@dataclass
class Bf16Mixed(_Precision):
    name = "bf16-mixed"
    summary = "bfloat16 autocast, float32 weights: Trainer(precision='bf16-mixed')."
    source = SOURCE
    precision = "bf16-mixed"
    plain_autocast = torch.bfloat16


@register_trick
@dataclass
class Bf16True(_Precision):
    name = "bf16-true"
    summary = "bfloat16 weights and activations, no float32 master copy: Trainer(precision='bf16-true')."
    source = SOURCE
    precision = "bf16-true"
    plain_params = torch.bfloat16
