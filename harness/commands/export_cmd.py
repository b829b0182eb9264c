"""``python -m harness export RUN_DIR --trick NAME --format onnx|torchscript``: a deployable file, checked.

Loads the row's checkpoint (the one its test used, or ``--checkpoint``) on the CPU, exports it with
Lightning's own ``LightningModule.to_onnx`` / ``to_torchscript``, loads the file back in its own
runtime (onnxruntime; ``torch.jit.load``) and prints the largest absolute difference from the
LightningModule's ``forward`` on the same real test inputs. Exit 1 when it exceeds ``--atol``.

Choices made for torch 2.14 and Lightning 2.6:

- ONNX goes through torch's dynamo exporter (``dynamo=True``, torch.onnx.export's default in
  torch 2.14), which needs ``onnxscript``. The older TorchScript-based exporter (``dynamo=False``)
  cannot export the transformer workload: it has no ONNX form for the fused
  ``aten::_transformer_encoder_layer_fwd`` that ``nn.TransformerEncoderLayer`` runs in eval mode.
  The batch axis is exported dynamic (``dynamic_shapes``: any batch size runs), and the check uses a
  batch size different from the export sample's to prove it; a module that will not export so is
  exported with a fixed batch size, and the output says so. The weights go inside the one ``.onnx``
  file (``external_data=False``; ONNX's protobuf limit makes that impossible past 2 GB).
- TorchScript: ``to_torchscript(method="script")`` keeps the module's control flow; a module that
  cannot be scripted is traced (``method="trace"``) on the sample instead, with a note
  (``--torchscript-method`` forces one). TorchScript is deprecated in torch 2.14 and
  ``LightningModule.to_torchscript`` warns that Lightning will drop it; the file still loads with
  ``torch.jit.load`` and in C++.
- Precision: exports are float32. A bf16-true run's checkpoint holds bf16 weights; they are cast
  (``module.float()``, in :func:`harness.runfolder.restore.load_module`) and the output says so, as it says
  when the run trained under autocast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.commands.predict_cmd import add_row_arguments, describe_checkpoint, describe_row
from harness.errors import UserError, first_line
from harness.errors import describe as describe_error
from harness.runfolder.restore import FORWARD_FIX, Restored, datamodule_for, input_batch, require_forward, restore

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # onnxscript: torch's dynamo ONNX exporter
EXPORT_SAMPLES = 2  # test inputs traced at export
CHECK_EXTRA = 3  # the check runs this many more, so that its batch size differs from the sample's

Inputs = tuple[torch.Tensor, ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_row_arguments(parser)
    parser.add_argument("--format", required=True, metavar="FORMAT", help="onnx or torchscript")
    parser.add_argument(
        "--torchscript-method", default=None, choices=("script", "trace"),
        help="how to_torchscript builds the file (default: script, falling back to trace when scripting fails)",
    )
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="the file to write (default RUN_DIR/exports/<run_id>-<checkpoint>.onnx or .pt)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest absolute difference from PyTorch accepted (default 1e-4); above it, exit 1")


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise UserError(f"unknown export format {value!r}; valid choices: {', '.join(FORMATS)}")
    return value


def check_atol(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise UserError(f"--atol must be a finite number >= 0, got {value}")
    return value


def require_onnx() -> None:
    """ONNX export and its check need the optional ``export`` extra; a UserError naming it when absent."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f"--format onnx needs {', '.join(missing)} (not importable here); "
            'install the export extra: pip install -e ".[export]"'
        )


def as_inputs(value: Any, what: str) -> Inputs:
    """A forward input as a tuple of tensors (one per forward argument), on the CPU."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(isinstance(item, torch.Tensor) for item in items):
        raise UserError(f"{what} is a {type(value).__name__}: export needs a tensor or a tuple of tensors as forward's input")
    return tuple(item.detach().cpu() for item in items)


def choose_inputs(restored: Restored) -> tuple[Inputs, Inputs, str, str]:
    """The export sample, the (larger) check input, where the sample came from, and what the check input is.

    The module's ``example_input_array`` when it defines one (what Lightning's exporters use by
    default), else the first real test inputs. The check input is real test data of a larger batch
    when it fits the sample's shape and dtype; else the sample repeated up to that batch size.
    """
    example = getattr(restored.module, "example_input_array", None)
    datamodule = datamodule_for(restored)
    if example is not None:
        sample = as_inputs(example, f"{type(restored.module).__name__}.example_input_array")
        source = "the module's example_input_array"
    else:
        sample = as_inputs(input_batch(datamodule, EXPORT_SAMPLES), "the test batch's first element")
        source = "the first test inputs"
    size = len(sample[0]) + CHECK_EXTRA
    if len(sample) == 1:
        real = input_batch(datamodule, size)
        if real.shape[1:] == sample[0].shape[1:] and real.dtype == sample[0].dtype:
            return sample, (real,), source, "test inputs"
    repeated = tuple(x.repeat(-(-size // len(x)), *([1] * (x.dim() - 1)))[:size] for x in sample)
    return sample, repeated, source, f"inputs ({source.removeprefix('the ')} repeated)"


def check_forward(restored: Restored, sample: Inputs, source: str) -> None:
    """A UserError, before any exporter runs, when forward does not take the export sample: the exporters'
    own errors say only where in their steps they failed ("TorchExportError ... step 1/3")."""
    module = restored.module
    try:
        with torch.no_grad():
            module(*sample)
    except Exception as error:
        name = type(module).__name__
        raise UserError(
            f"{name}.forward does not take {source} ({describe(sample)}): {describe_error(error)}; "
            f"{FORWARD_FIX}, or set {name}.example_input_array to an input it takes"
        ) from None


def flat_outputs(value: Any) -> list[torch.Tensor]:
    """forward's output as a flat list of tensors (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat_outputs(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat_outputs(v)]
    return []


def max_abs_diff(got: Sequence[Any], want: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference over all outputs; a UserError when their number or shapes differ."""
    if len(got) != len(want):
        raise UserError(f"the exported file gives {len(got)} outputs, the module's forward {len(want)}")
    worst = 0.0
    for g, w in zip(got, want):
        g = torch.as_tensor(g).cpu()
        if tuple(g.shape) != tuple(w.shape):
            raise UserError(f"the exported file gives shape {tuple(g.shape)}, the module's forward {tuple(w.shape)}")
        if g.numel():
            worst = max(worst, (g.double() - w.detach().cpu().double()).abs().max().item())
    return worst


def export_onnx(restored: Restored, path: Path, sample: Inputs) -> tuple[bool, list[str]]:
    """``to_onnx`` with a dynamic batch axis, else a fixed one; whether the batch axis is dynamic, and notes."""
    module = restored.module
    common: dict[str, Any] = dict(dynamo=True, external_data=False, verbose=False)
    batch = torch.export.Dim("batch")
    try:
        module.to_onnx(path, sample, dynamic_shapes=tuple({0: batch} for _ in sample), **common)
        return True, []
    except Exception as error:
        why = first_line(error)
        module.to_onnx(path, sample, **common)
        return False, [f"the batch axis could not be exported dynamic ({type(error).__name__}: {why}); "
                       f"the file takes batches of exactly {len(sample[0])}"]


def run_onnx(path: Path, inputs: Inputs) -> list[Any]:
    """The ONNX file's outputs in onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise UserError(f"the ONNX file takes {len(names)} inputs ({', '.join(names)}), the sample has {len(inputs)}")
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})


def export_torchscript(restored: Restored, path: Path, sample: Inputs, method: str | None) -> tuple[str, list[str]]:
    """``to_torchscript``, scripted (or traced when scripting fails or ``method`` says so); the method used, and notes."""
    module = restored.module
    example = sample[0] if len(sample) == 1 else sample
    notes = ["TorchScript is deprecated in torch 2.14, and LightningModule.to_torchscript warns that Lightning will remove it"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation warnings, said once above
        if method in (None, "script"):
            try:
                module.to_torchscript(path, method="script")
                return "script", notes
            except Exception as error:
                if method == "script":
                    raise
                why = first_line(error)
                notes.append(f"{type(module).__name__} cannot be scripted ({type(error).__name__}: {why}): traced on the sample instead")
        module.to_torchscript(path, method="trace", example_inputs=example)
    return "trace", notes


def run_torchscript(path: Path, inputs: Inputs) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return flat_outputs(loaded(*inputs))


def describe(inputs: Inputs) -> str:
    return ", ".join(f"{tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in inputs)


def main(args: argparse.Namespace) -> int:
    fmt = check_format(args.format)
    atol = check_atol(args.atol)
    if fmt == "onnx":
        require_onnx()
    restored = restore(
        args.run_dir, args.trick, args.workload, args.accelerator, args.repeat, args.checkpoint, device="cpu",
        trust_checkpoint=args.trust_checkpoint,
    )
    restored.module.float().eval()
    print(describe_row(restored))
    print(describe_checkpoint(restored))
    require_forward(restored.module, "export")
    sample, check, source, check_what = choose_inputs(restored)
    check_forward(restored, sample, source)
    out: Path = args.out or Path(restored.spec.run_dir) / "exports" / f"{restored.spec.run_id}-{restored.checkpoint}{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = restored.notes

    run_file: Callable[[Path, Inputs], list[Any]]
    try:
        if fmt == "onnx":
            dynamic, export_notes = export_onnx(restored, out, sample)
            how, run_file = f"to_onnx (dynamo exporter, {'dynamic' if dynamic else 'fixed'} batch axis)", run_onnx
        else:
            method, export_notes = export_torchscript(restored, out, sample, args.torchscript_method)
            how, run_file, dynamic = f"to_torchscript(method={method!r})", run_torchscript, True
    except OSError as error:  # an --out that cannot be written: the path and the cause (harness.cli), exit 2
        if error.filename is None:  # a write to the open file (a full disk) names none: it is the export's
            error.filename = str(out)
        raise
    except UserError:
        raise
    except Exception as error:
        first = first_line(error)
        print(f"harness: {fmt} export of {restored.result.run_id} failed: {type(error).__name__}: {first}", file=sys.stderr)
        return 1
    for note in notes + export_notes:
        print(f"note: {note}")
    if not dynamic:
        check, check_what = sample, f"inputs ({source.removeprefix('the ')})"
    print(f"exported in float32 with {how}, sample: {describe(sample)} from {source}")
    print(f"wrote {out} ({out.stat().st_size / 1024:,.0f} KiB)")

    with torch.no_grad():
        want = flat_outputs(restored.module(*check))
    try:
        got = run_file(out, check)
    except (UserError, OSError):  # an --out that cannot be written: the path and the cause (harness.cli), exit 2
        raise
    except Exception as error:
        first = first_line(error)
        print(f"harness: the exported file fails on a batch of {len(check[0])}: {type(error).__name__}: {first}", file=sys.stderr)
        return 1
    diff = max_abs_diff(got, want)
    runtime = "onnxruntime (CPUExecutionProvider)" if fmt == "onnx" else "torch.jit.load"
    verdict = "ok" if diff <= atol else "FAIL"
    print(f"check: {runtime} vs the LightningModule's forward on {len(check[0])} {check_what} "
          f"(export sample: {len(sample[0])}): max abs diff {diff:.3g} (--atol {atol:g}): {verdict}")
    if diff > atol:
        print(f"harness: the exported file differs from PyTorch by {diff:.3g}, above --atol {atol:g}", file=sys.stderr)
        return 1
    return 0
