"""FLOPs per training batch, achieved FLOP/s and model FLOPs utilisation (MFU) against dense peaks.

FLOPs are counted once per run by Lightning's ``measure_flops`` (torch's FlopCounterMode) on a
meta-device copy of the module, forward and backward of the training loss, at the batch shape the
run trained with: no real compute, no effect on the measured window. Optimizer FLOPs are not
counted, as in the usual MFU definition (PaLM, appendix B).

Peaks are DENSE tensor-core/CUDA-core figures. Vendors print sparse (2:4) figures with a footnote,
and Lightning 2.6's own table gives the H200 its sparse numbers (2e15 for bf16; dense is 989.4e12),
which would halve every MFU: hence this table, with its sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.throughput import measure_flops

# dense peak FLOP/s by chip and math mode; sources per entry
DENSE_PEAKS: dict[str, dict[str, float]] = {
    # H200 SXM: same Hopper GH100 compute as the H100 SXM; the H200 datasheet's TF32/BF16/FP16 lines
    # (989 / 1,979 / 1,979 TFLOPS) carry the footnote "With sparsity": dense is half of them.
    # https://www.nvidia.com/en-us/data-center/h200/
    "h200": {"fp64": 34e12, "fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    # H100 SXM5 / PCIe: NVIDIA H100 datasheet, sparse figures halved. https://www.nvidia.com/en-us/data-center/h100/
    "h100 pcie": {"fp64": 25.6e12, "fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "h100": {"fp64": 33.5e12, "fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    # A100 (SXM and PCIe): NVIDIA A100 datasheet, dense column.
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    "a100": {"fp64": 9.7e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    # L4: NVIDIA L4 datasheet, sparse figures halved. https://www.nvidia.com/en-us/data-center/l4/
    "l4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12},
    # A10G / A10: NVIDIA A10 datasheet, dense. https://www.nvidia.com/en-us/data-center/products/a10-gpu/
    "a10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
}
PEAKS_NOTE = "dense peaks (no 2:4 sparsity), from the vendors' datasheets; see harness/measuring/flops.py"


def math_mode(precision: str) -> str:
    """The matmul number format a Lightning precision setting runs on."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("64"):
        return "fp64"
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


def dense_peak(device_name: str, precision: str) -> tuple[float | None, str]:
    """Dense peak FLOP/s for a GPU name and precision, with a description; None where unknown."""
    name = device_name.lower()
    mode = math_mode(precision)
    for chip, peaks in DENSE_PEAKS.items():  # longest keys first where they overlap ("h100 pcie")
        if chip in name and (chip != "h100" or "pcie" not in name):
            if mode in peaks:
                return peaks[mode], f"{peaks[mode] / 1e12:,.1f} TFLOP/s {mode} dense ({chip})"
            return None, f"no {mode} peak listed for {chip}"
    return None, f"no peak FLOP/s listed for {device_name!r}"


def meta_batch(batch: Any) -> Any:
    """The same structure as ``batch`` with every tensor replaced by an empty meta tensor.

    Floating tensors become float32, the dtype of the freshly built module: under ``bf16-true``
    Lightning hands the batch over in bfloat16, and a count does not depend on the dtype.
    """
    if isinstance(batch, torch.Tensor):
        dtype = torch.float32 if batch.is_floating_point() else batch.dtype
        return torch.empty(batch.shape, dtype=dtype, device="meta")
    if isinstance(batch, (list, tuple)):
        return type(batch)(meta_batch(item) for item in batch)
    if isinstance(batch, dict):
        return {key: meta_batch(value) for key, value in batch.items()}
    return batch


def training_flops_per_batch(build_module: Any, loss_of: Any, batch: Any) -> int:
    """Forward + backward FLOPs of one training batch, counted on a meta-device copy of the module.

    ``build_module()`` builds a fresh module (under the meta device here); ``loss_of(module, batch)``
    returns the training loss.
    """
    with torch.device("meta"):
        module = build_module()
    sample = meta_batch(batch)
    return int(measure_flops(module, lambda: loss_of(module, sample), loss_fn=lambda loss: loss))


@dataclass(frozen=True)
class Utilisation:
    flops_per_batch: int
    achieved_flops: float | None  # FLOP/s at the measured throughput
    mfu: float | None
    peak: str


def utilisation(flops_per_batch: int, samples_per_s: float | None, batch_size: int, accelerator: str,
                device_name: str, precision: str) -> Utilisation:
    achieved = flops_per_batch / batch_size * samples_per_s if samples_per_s and batch_size else None
    if accelerator != "gpu":
        return Utilisation(flops_per_batch, achieved, None, "CPU: FLOP/s only, no MFU")
    peak, description = dense_peak(device_name, precision)
    mfu = achieved / peak if achieved is not None and peak else None
    return Utilisation(flops_per_batch, achieved, mfu, description)
