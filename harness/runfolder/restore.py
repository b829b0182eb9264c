"""Bring a finished run back: its row, a checkpoint, the trained LightningModule and its data.

``predict`` and ``export`` both start from a run folder and a row named as the report names it
(trick, and workload/accelerator/repeat when the folder holds several). This module finds the row
(:func:`harness.runfolder.rundir.find_run`), picks the checkpoint the row's test used unless told otherwise
(:func:`choose_checkpoint`), rebuilds the module class from the row's spec and loads the weights
through Lightning's ``load_from_checkpoint`` (:func:`load_module`), and serves the run's own test
data (:func:`datamodule_for`, :func:`input_batch`). Everything it cannot do is a UserError saying
what the row has instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from harness.errors import ANSI, UserError, first_line, rejected_global, unknown_name_error
from harness.runfolder.checkpoints import BEST, CHECKPOINT_NAMES, FINAL, LAST, resolve
from harness.runfolder.rundir import find_run
from harness.spec import Result, RunSpec
from harness.workload import WORKLOADS, Workload


@dataclass
class Restored:
    """One run's trained module, with where it came from and what had to be decided on the way."""

    spec: RunSpec
    result: Result
    workload: Workload
    checkpoint: str  # "best", "last" or "final"
    path: Path  # the checkpoint file
    module: pl.LightningModule  # in eval mode, float32, on ``accelerator``
    accelerator: str  # "cpu" or "gpu": where the module is
    stored_dtype: torch.dtype | None  # the floating dtype of the weights in the file (bf16 for bf16-true runs)
    notes: list[str] = field(default_factory=list)  # one line each, for the command to print


def find_trained_run(
    run_dir: Path, trick: str, workload: str | None = None, accelerator: str | None = None, repeat: int = 0
) -> tuple[RunSpec, Result]:
    """The spec and row of a run that finished and kept checkpoints; a UserError saying why not."""
    spec, result = find_run(run_dir, trick, workload, accelerator, repeat)
    if result.status != "ok":
        raise UserError(
            f"run {result.run_id} is {result.status} ({result.reason or 'no reason recorded'}): "
            "it has no trained weights to use; pick an ok row of the report"
        )
    if not result.checkpoints:
        why = "it ran with --no-checkpoints" if not spec.checkpoints else "its row lists none"
        raise UserError(f"run {result.run_id} kept no checkpoints ({why}); rerun it with checkpoints on")
    return spec, result


def choose_checkpoint(result: Result, requested: str | None = None) -> tuple[str, list[str]]:
    """The checkpoint to load and the notes to print about the choice.

    By default the weights the row's test used: ``final`` when the row has one (SWA: the averaged
    weights live only there), else ``best``; ``last`` when there is no ``best`` (no validation to
    rank epochs by), with a note. A name the row lacks is a UserError listing the ones it has.
    """
    have = [name for name in CHECKPOINT_NAMES if name in result.checkpoints]
    if requested is not None:
        if requested not in CHECKPOINT_NAMES:
            raise unknown_name_error("checkpoint", requested, CHECKPOINT_NAMES, f"run {result.run_id} has: {', '.join(have)}")
        if requested not in result.checkpoints:
            raise UserError(
                f"run {result.run_id} has no {requested}.ckpt; it has: {', '.join(have)} "
                f"(its test used {result.details.get('test_weights', 'unknown weights')})"
            )
        return requested, []
    if FINAL in result.checkpoints:
        return FINAL, []
    if BEST in result.checkpoints:
        return BEST, []
    why = str(result.details.get("test_weights", "")).removeprefix("final weights: ") or "no validation metric to rank epochs by"
    return LAST, [f"run {result.run_id} has no best.ckpt ({why}): using last.ckpt"]


def checkpoint_file(spec: RunSpec, result: Result, name: str) -> Path:
    """The checkpoint's path where the run folder is now; a UserError when the file is gone."""
    path = resolve(spec.run_dir, result.checkpoints[name])
    if not path.is_file():
        raise UserError(f"{name}.ckpt of run {result.run_id} is listed in its row but missing: {path}")
    return path


TRUST_FLAG = "--trust-checkpoint"


def refusal(path: Path, error: Exception) -> str:
    """One line saying which file was refused and which global it asked for, and how to load it anyway.

    torch's weights-only unpickler names the first global outside its allowlist ("... unsupported
    GLOBAL os.system whose module os is blocked", "Unsupported global: GLOBAL ..."): that name is
    what tells a user whether the file is hostile. Its first line is a generic preamble, so the
    line that says what went wrong is looked for instead.
    """
    text = ANSI.sub("", str(error))
    name = rejected_global(error)
    if name:
        what = f"it asks for the global {name}"
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next((line for line in lines if "nsupported" in line), lines[-1] if lines else type(error).__name__)
        what = f"it holds more than tensors and plain data ({detail})"
    return (
        f"refusing to load checkpoint {str(path)!r}: {what}, and unpickling it could run code; "
        f"if you trust this file, pass {TRUST_FLAG}"
    )


def peek_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """The checkpoint's dict, memory-mapped (a look at it costs no second read of a large file).

    Read with ``weights_only=True``: a run folder is something people download and share, and a full
    unpickle of a crafted ``.ckpt`` runs any code it names. The harness's own checkpoints (and
    Lightning's: tensors, dicts, numbers and strings) need no extra safe globals. Anything else is a
    UserError naming the file and the global, unless ``trust`` (``--trust-checkpoint``) says the
    user vouches for the file.
    """
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise UserError(refusal(path, error)) from None
    except Exception as error:  # not a zip-format torch file, truncated, ...
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {type(error).__name__}: {first_line(error)}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"checkpoint {str(path)!r} is not a Lightning checkpoint (no state_dict in it)")
    return checkpoint


def floating_dtype(state_dict: dict[str, Any]) -> torch.dtype | None:
    """The dtype of the first floating-point tensor of a state dict (None when it has none)."""
    return next((v.dtype for v in state_dict.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)


def load_module(
    spec: RunSpec, workload: Workload, path: Path, map_location: str, trust: bool = False
) -> tuple[pl.LightningModule, torch.dtype | None, list[str]]:
    """The trained module, in eval mode, through Lightning's ``load_from_checkpoint``.

    The class is the one the run trained (``type(workload.build_module(spec))``); its constructor
    arguments come from the checkpoint's saved hyperparameters. A checkpoint without them (a module
    that never calls ``save_hyperparameters``) gets ``spec.init_args`` for an imported module, and
    for a registered workload the module its workload builds, with the state dict loaded into it.
    Weights stored in a lower precision (bf16-true) are cast to the module's float32 parameters by
    ``load_state_dict``. Returns the module, the dtype of the stored weights, and notes to print.
    Both reads are weights-only unless ``trust`` (see :func:`peek_checkpoint`): Lightning 2.6's
    ``load_from_checkpoint`` would otherwise default to a full unpickle.
    """
    built = workload.build_module(spec)
    cls = type(built)
    checkpoint = peek_checkpoint(path, trust)
    notes: list[str] = []
    has_hparams = bool(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY))
    if has_hparams or ":" in spec.workload:
        kwargs = {} if has_hparams else dict(spec.init_args)
        module = cls.load_from_checkpoint(path, map_location=map_location, weights_only=not trust, **kwargs)
    else:  # a registered workload whose module does not save its hyperparameters
        module = built
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"])
        module.to(map_location)
        notes.append(f"{cls.__name__} saves no hyperparameters: built by workload {spec.workload!r}, then the state dict loaded")
    stored = floating_dtype(checkpoint.get("state_dict", {}))
    if stored is not None and stored != torch.float32:
        notes.append(f"the checkpoint holds {str(stored).removeprefix('torch.')} weights: cast to float32 (module.float()), "
                     "which is what runs from here on")
    module.float()  # no-op for float32 weights; a module that keeps bf16 parameters is made float32 too
    module.eval()
    return module, stored, notes


def run_on(row_accelerator: str, requested: str | None) -> tuple[str, list[str]]:
    """The accelerator to load onto: ``requested``, else the row's when this machine has it, else the CPU."""
    if requested is not None:
        return requested, []
    if row_accelerator == "gpu" and not torch.cuda.is_available():
        return "cpu", ["the run trained on a GPU but none is visible here: using the CPU"]
    return row_accelerator, []


def restore(
    run_dir: Path,
    trick: str,
    workload: str | None = None,
    accelerator: str | None = None,
    repeat: int = 0,
    checkpoint: str | None = None,
    device: str | None = None,
    trust_checkpoint: bool = False,
) -> Restored:
    """Find the row, pick its checkpoint and load the module.

    ``accelerator`` names the row; ``device`` ("cpu" or "gpu") is where the module goes, by default
    the row's accelerator when this machine has it, else the CPU (with a note). ``trust_checkpoint``
    (``--trust-checkpoint``) allows a full unpickle of the checkpoint.
    """
    spec, result = find_trained_run(run_dir, trick, workload, accelerator, repeat)
    name, notes = choose_checkpoint(result, checkpoint)
    path = checkpoint_file(spec, result, name)
    target, device_notes = run_on(spec.accelerator, device)
    built = WORKLOADS.get(spec.workload).from_params(spec.workload_params)
    module, stored, load_notes = load_module(spec, built, path, "cuda" if target == "gpu" else "cpu", trust_checkpoint)
    precision = result.precision
    if precision and precision != "32-true" and not precision.endswith("-true"):
        load_notes.append(f"the run trained under {precision} autocast; this runs in float32")
    return Restored(spec, result, built, name, path, module, target, stored, notes + device_notes + load_notes)


FORWARD_FIX = "define forward(self, x) taking the batch's first element (what predict and export feed it)"


def require_forward(module: pl.LightningModule, command: str) -> None:
    """A UserError when the module has no ``forward``: export traces it, and predict's default
    ``predict_step`` calls it (a module that defines its own ``predict_step`` needs none for predict)."""
    if is_overridden("forward", module, pl.LightningModule):
        return
    name = type(module).__name__
    if command == "predict":
        if is_overridden("predict_step", module, pl.LightningModule):
            return
        raise UserError(
            f"{name} defines no forward, and predict runs Lightning's default predict_step, which calls forward(batch); "
            f"{FORWARD_FIX}, or a predict_step(self, batch, batch_idx)"
        )
    raise UserError(f"{name} defines no forward, and {command} traces forward; {FORWARD_FIX}")


def datamodule_for(restored: Restored) -> pl.LightningDataModule:
    """The run's own datamodule, built from its spec (same data, split and seed as the run)."""
    return restored.workload.build_datamodule(restored.spec)


def has_predict_loader(datamodule: pl.LightningDataModule) -> bool:
    """Whether the datamodule serves a predict set; without one, the test set stands in."""
    return is_overridden("predict_dataloader", datamodule, pl.LightningDataModule)


def first_batch(datamodule: pl.LightningDataModule) -> Any:
    """The first batch of the predict set (the test set when the datamodule has no predict set), on the CPU."""
    datamodule.prepare_data()
    if has_predict_loader(datamodule):
        datamodule.setup("predict")
        loader: Iterable[Any] = datamodule.predict_dataloader()
    else:
        datamodule.setup("test")
        loader = datamodule.test_dataloader()
    batch = next(iter(loader), None)
    if batch is None:
        raise UserError(f"{type(datamodule).__name__} serves no test/predict batch to take an input from")
    return batch


def model_input(batch: Any) -> torch.Tensor:
    """What ``forward`` takes from a batch: its first element ((images, labels) -> images)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise UserError(f"the batch's first element is a {type(x).__name__}, not a tensor: no input sample to take from it")
    return x


def input_batch(datamodule: pl.LightningDataModule, count: int) -> torch.Tensor:
    """``count`` real inputs from the start of the test set (fewer when a batch holds fewer), on the CPU.

    A batch smaller than ``count`` is repeated up to it, so that the caller gets the batch size it
    asked for (export checks a batch size different from its sample's).
    """
    x = model_input(first_batch(datamodule)).detach().cpu()
    if len(x) < count:
        x = x.repeat(-(-count // len(x)), *([1] * (x.dim() - 1)))
    return x[:count].contiguous()
