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
from typing import ClassVar

import lightning.pytorch as pl
import torch

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick

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
        if ran != self.precision:
            raise TrickSkipped(f"asked for precision {self.precision} but Lightning chose {ran} on {setup.accelerator}")


@register_trick
@dataclass
class Fp16Mixed(_Precision):
    name = "16-mixed"
    summary = "float16 autocast with a gradient scaler: Trainer(precision='16-mixed'); CUDA only (skipped on CPU)."
    source = SOURCE
    precision = "16-mixed"


@register_trick
@dataclass
class Bf16Mixed(_Precision):
    name = "bf16-mixed"
    summary = "bfloat16 autocast, float32 weights: Trainer(precision='bf16-mixed')."
    source = SOURCE
    precision = "bf16-mixed"


@register_trick
@dataclass
class Bf16True(_Precision):
    name = "bf16-true"
    summary = "bfloat16 weights and activations, no float32 master copy: Trainer(precision='bf16-true')."
    source = SOURCE
    precision = "bf16-true"
