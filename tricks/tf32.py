"""TF32: float32 matrix multiplications and convolutions on tensor cores, at a 10-bit mantissa.

PyTorch docs: https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices
On torch 2.9+ the switches are ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` and
``torch.backends.cudnn.conv.fp32_precision = "tf32"``; older torch has
``torch.set_float32_matmul_precision("high")`` and ``torch.backends.cudnn.allow_tf32``. Both are
process-global: they are set in the run's own process (every run has one, forked or spawned), so the
next run starts from torch's defaults (tests/test_isolation.py flips them and checks). Needs a CUDA
GPU of compute capability 8.0+ (Ampere); elsewhere the row is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.errors import TrickSkipped
from harness.trick import Conflict, Setup, Trick, register_trick


def tf32_unsupported(accelerator: str) -> str:
    """Why TF32 cannot run here; "" when it can."""
    if accelerator != "gpu" or not torch.cuda.is_available():
        return "tf32 needs a CUDA GPU (tensor cores); a CPU has no TF32 mode, so the row would be the baseline"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"tf32 needs compute capability 8.0+ (Ampere or later); this GPU has {major}.{minor}"
    return ""


def enable_tf32() -> dict[str, str]:
    """Turn TF32 on for matmuls and convolutions with the API this torch has; what was set."""
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if matmul is not None:  # torch 2.9+: the old switches are deprecated
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        return {"matmul": "torch.backends.cuda.matmul.fp32_precision='tf32'", "conv": "torch.backends.cudnn.conv.fp32_precision='tf32'"}
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    return {"matmul": "torch.set_float32_matmul_precision('high')", "conv": "torch.backends.cudnn.allow_tf32=True"}


@register_trick
@dataclass
class Tf32(Trick):
    name = "tf32"
    summary = "float32 matmuls and convolutions on tensor cores (TF32); CUDA with compute capability 8.0+."
    source = "https://pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices"

    def apply(self, setup: Setup) -> None:
        reason = tf32_unsupported(setup.accelerator)
        if reason:
            raise TrickSkipped(reason)
        setup.details["tf32"] = enable_tf32()

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        conflicts = super().conflicts(others)
        if any(other.name == "bf16-true" for other in others):
            conflicts.append(Conflict("warn", "tf32 with bf16-true: the weights and matmuls are bfloat16, so TF32 has no float32 matmul to change"))
        return conflicts
