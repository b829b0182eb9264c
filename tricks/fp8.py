"""fp8: torchao's float8 training, the module's nn.Linear layers swapped to ``Float8Linear`` before fit.

torchao docs: https://docs.pytorch.org/ao/stable/workflows/training.html (``torchao.float8``)
``torchao.float8.convert_to_float8_training(module, module_filter_fn=..., config=...)`` replaces each
``nn.Linear`` that the filter admits with a ``Float8Linear``: its three matmuls (output, grad input,
grad weight) cast their operands to float8 with dynamic scales and run on float8 tensor cores, the rest of
the model stays in its own precision. ``recipe`` picks torchao's ``Float8LinearRecipeName``: ``tensorwise``
(torchao's default config: one scale per tensor), ``rowwise`` (a scale per row: more accurate,
torchao says) or ``rowwise_with_gw_hp`` (rowwise, the grad-weight matmul in high precision).

What is converted, and what is not (recorded in ``details``, with torchao's version and the recipe):
- a Linear whose ``in_features`` or ``out_features`` is not divisible by 16 is left alone, as torchao's
  docs advise (float8 matmuls need dims divisible by 16);
- the ``out_proj`` of an ``nn.MultiheadAttention`` is left alone: MultiheadAttention never calls it, it
  passes its weight to ``F.multi_head_attention_forward``, so a Float8Linear there would run no float8;
- a module with no Linear that passes both is skipped with the reason, naming its layers and their dims.

Needs a CUDA GPU of compute capability 8.9+ (Ada, Hopper and later have float8 tensor cores); elsewhere
the row is skipped with the reason (torch's float8 matmul does run on a CPU, which is how the tests
check the conversion, but without float8 tensor cores that row would not measure the trick). torchao is an
optional dependency (``pip install -e '.[fp8]'``); without it the row is skipped with that hint.

Precision: float8 training is made for bfloat16 around the float8 matmuls (torchao's examples convert a
``.bfloat16()`` model; torchtitan trains with bf16 parameters): ``fp8+bf16-mixed`` (autocast; Float8Linear
follows the autocast dtype) and ``fp8+bf16-true`` run as asked. ``fp8`` alone keeps the rest in float32,
which is valid, and the row's ``precision`` column says so; but the row-wise recipes then need float32
outputs from torch's row-wise float8 matmul, which only cuBLAS on compute capability 9.0 gives (a
warning: elsewhere the run fails). ``fp8+16-mixed`` runs with a warning: torchao
makes and tests its recipes with bfloat16, not float16 with a gradient scaler. torchao recommends
``torch.compile`` with float8 (it fuses the scaling and casting kernels; without it the casts can eat the
gain): ``fp8+compile`` is the combination to measure. Compile traces at the first step, so the order in
the combination does not matter for a compiled LightningModule (``compile.target=module``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import torch
from torch import nn

from harness.errors import TrickSkipped, first_line
from harness.trick import Conflict, Setup, Trick, register_trick

INSTALL_HINT = "needs torchao: pip install -e '.[fp8]'"
MIN_CAPABILITY = (8, 9)
DIVISOR = 16  # torchao's docs: convert only Linear layers whose dims are divisible by 16


def fp8_unsupported(accelerator: str) -> str:
    """Why float8 training cannot run here; "" when the hardware can."""
    if accelerator != "gpu" or not torch.cuda.is_available():
        return "fp8 needs a CUDA GPU with float8 tensor cores (compute capability 8.9+); a CPU has none, so the row would not measure what float8 training is for"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < MIN_CAPABILITY:
        return f"fp8 needs compute capability 8.9+ (Ada, Hopper or later: float8 tensor cores); this GPU has {major}.{minor}"
    return ""


def load_torchao() -> ModuleType:
    """``torchao.float8``, or TrickSkipped: with the install hint when torchao is not installed, with the
    error when the installed torchao does not import with this torch (its releases follow torch's closely:
    0.12 fails on torch 2.14, 0.15-0.16 import without their C++ kernels, 0.17+ load them)."""
    try:
        return importlib.import_module("torchao.float8")
    except ImportError as error:
        raise TrickSkipped(f"fp8 {INSTALL_HINT} ({first_line(error)})") from error
    except Exception as error:  # an install made for another torch fails in its own ways
        raise TrickSkipped(f"fp8: torchao does not import with torch {torch.__version__}: {type(error).__name__}: {first_line(error)}") from error


def torchao_version() -> str:
    import torchao

    return str(getattr(torchao, "__version__", "unknown"))


def ineligible_linears(module: nn.Module) -> dict[str, str]:
    """Every nn.Linear of ``module`` that float8 training should leave alone, with why."""
    inside_attention = {
        f"{name}.out_proj" if name else "out_proj"
        for name, layer in module.named_modules()
        if isinstance(layer, nn.MultiheadAttention)
    }
    reasons = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        if name in inside_attention:
            reasons[name] = "nn.MultiheadAttention's out_proj (it passes the weight to F.multi_head_attention_forward, never calls the layer)"
        elif layer.in_features % DIVISOR or layer.out_features % DIVISOR:
            reasons[name] = f"{layer.in_features}->{layer.out_features}: dims not divisible by {DIVISOR}"
    return reasons


def convert_linears(module: nn.Module, recipe: str) -> dict[str, Any]:
    """Swap the eligible nn.Linear layers of ``module`` (in place) for torchao's Float8Linear.

    What was converted and what was left, as ``details``; TrickSkipped when nothing is eligible (checked
    first: installing torchao would not help that module) or torchao is absent. The hardware is not
    checked here (``fp8_unsupported``): the conversion itself runs anywhere, a CPU included.
    """
    linears = [name for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]
    if not linears:
        raise TrickSkipped("fp8: the module has no nn.Linear, and torchao's float8 training converts only nn.Linear layers")
    skipped = ineligible_linears(module)
    if len(skipped) == len(linears):
        shown = "; ".join(f"{name} ({why})" for name, why in list(skipped.items())[:6])
        raise TrickSkipped(f"fp8: no nn.Linear of the module can run in float8: {shown}")
    float8 = load_torchao()
    config = float8.Float8LinearConfig.from_recipe_name(recipe)
    float8.convert_to_float8_training(module, module_filter_fn=lambda layer, fqn: fqn not in skipped, config=config)
    converted = [name for name, layer in module.named_modules() if isinstance(layer, float8.float8_linear.Float8Linear)]
    return {
        "torchao_version": torchao_version(),
        "fp8_recipe": recipe,
        "fp8_converted_count": len(converted),
        "fp8_converted": converted,
        "fp8_skipped": skipped,
    }


@register_trick
@dataclass
class Fp8(Trick):
    name = "fp8"
    summary = (
        "torchao float8 training: eligible nn.Linear layers (dims divisible by 16) swapped to Float8Linear; "
        "CUDA with compute capability 8.9+, needs the fp8 extra (torchao)."
    )
    source = "https://docs.pytorch.org/ao/stable/workflows/training.html"
    helps_when = "the Linear layers are large (thousands of features, as in billion-parameter transformers) on an H100-class GPU, with torch.compile"

    recipe: Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"] = "tensorwise"

    def apply(self, setup: Setup) -> None:
        reason = fp8_unsupported(setup.accelerator)
        if reason:
            raise TrickSkipped(reason)
        setup.details.update(convert_linears(setup.module, self.recipe))

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        conflicts = super().conflicts(others)
        if any(other.name == "16-mixed" for other in others):
            conflicts.append(
                Conflict("warn", "fp8 with 16-mixed: torchao's float8 recipes are made and tested around bfloat16 (bf16-mixed or bf16-true), not float16 with a gradient scaler")
            )
        half = {"bf16-mixed", "bf16-true", "16-mixed"}
        if self.recipe.startswith("rowwise") and not any(other.name in half for other in others):
            conflicts.append(
                Conflict(
                    "warn",
                    f"fp8.recipe={self.recipe} in float32 (no bf16-mixed or bf16-true): torch's row-wise float8 matmul gives float32 "
                    "outputs only through cuBLAS on compute capability 9.0 (CUDA 12.9+); on other GPUs the run fails. Add bf16-mixed",
                )
            )
        return conflicts
