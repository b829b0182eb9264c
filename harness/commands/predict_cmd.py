"""``python -m harness predict RUN_DIR --trick NAME``: a run's trained model on its test set.

Loads the checkpoint the row's test used (or ``--checkpoint``) with Lightning's
``load_from_checkpoint``, runs ``Trainer.predict`` over the run's own test data, and saves the
concatenated outputs with ``torch.save`` (``RUN_DIR/predictions/<run_id>-<checkpoint>.pt``).
It runs on the row's accelerator when this machine has it (else the CPU, with a note), in float32
whatever precision the run trained in (the output says so).
Then, as Lightning's tutorial does after training, it uses the plain PyTorch part that the workload
names (the autoencoder's ``encoder``) on its own, on a few test inputs, and shows that it gives
what the LightningModule's ``forward`` gives.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning.pytorch.utilities.model_helpers import is_overridden

from harness.errors import UserError, describe
from harness.runfolder.restore import FORWARD_FIX, TRUST_FLAG, Restored, datamodule_for, has_predict_loader, input_batch, require_forward, restore

STANDALONE_SAMPLES = 4  # test inputs the standalone submodule is shown on, as in Lightning's tutorial


def add_row_arguments(parser: argparse.ArgumentParser) -> None:
    """The run folder, the row (as the report names it) and the checkpoint; shared with ``export``."""
    parser.add_argument("run_dir", type=Path, help="a run folder written by 'python -m harness run'")
    parser.add_argument("--trick", required=True, metavar="NAME", help="the row's trick, as the report names it (baseline, swa, bf16-mixed+grad-clipping...)")
    parser.add_argument("--workload", default=None, help="the row's workload (needed when the folder holds several)")
    parser.add_argument("--accelerator", default=None, help="the row's accelerator, cpu or gpu (needed when the folder holds both)")
    parser.add_argument("--repeat", type=int, default=0, help="the row's repeat (default 0)")
    parser.add_argument(
        "--checkpoint", default=None, metavar="NAME",
        help="best, last or final (default: the weights the row's test used: final for SWA, else best)",
    )
    parser.add_argument(
        TRUST_FLAG, action="store_true",
        help="load a checkpoint that holds more than tensors and plain data (a full unpickle, which can run "
             "code): only for a file you know; without it such a checkpoint is refused",
    )


def save_bytes(obj: Any, out: Path) -> None:
    """``torch.save`` through a buffer, then one plain write: torch's own file writer turns a full disk or
    a file-size limit into a RuntimeError ("file write failed") without the path; a Python write raises
    the OSError that names the path and the cause (one line from the CLI)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getbuffer())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_row_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="where to torch.save the outputs (default RUN_DIR/predictions/<run_id>-<checkpoint>.pt)")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's 'GPU available / TPU available' banner and tips are noise around one predict call,
    and so is the deprecation warning Lightning 2.6's pytree helper raises under torch 2.14."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
            yield
    finally:
        logger.setLevel(level)


def describe_row(restored: Restored) -> str:
    r = restored.result
    return f"run {r.run_id} ({r.trick}, {r.workload}, {r.dataset}, {r.accelerator}, repeat {r.repeat})"


def describe_checkpoint(restored: Restored) -> str:
    """Which checkpoint, and whether it holds the weights the row's test used."""
    used = str(restored.result.details.get("test_weights", ""))
    relpath = restored.result.checkpoints[restored.checkpoint]
    no_test = restored.result.details.get("test_skipped") or restored.result.details.get("test_error")
    if no_test and (used.startswith(f"{restored.checkpoint}.ckpt") or (used.startswith("final weights") and restored.checkpoint == "last")):
        why = f"the weights the row's test would have used; it has no test result ({no_test})"
    elif used.startswith(f"{restored.checkpoint}.ckpt"):
        why = "the weights the row's test used"
    elif used.startswith("final weights") and restored.checkpoint == "last":
        why = "the latest save of the weights the row's test used (as fit left them)"
    elif used:
        why = f"not the weights the row's test used ({used.split(':')[0]})"
    else:
        why = "the row does not say which weights its test used"
    return f"checkpoint: {restored.checkpoint} ({relpath}): {why}"


def concatenate(outputs: list[Any]) -> Any:
    """Per-batch outputs as one tensor along the batch axis when they are tensors that stack so; else the list."""
    if outputs and all(isinstance(o, torch.Tensor) and o.dim() > 0 for o in outputs):
        if len({o.shape[1:] for o in outputs}) == 1:
            return torch.cat([o.detach().cpu() for o in outputs])
    return outputs


def predict(restored: Restored, datamodule: pl.LightningDataModule) -> tuple[Any, str]:
    """``Trainer.predict`` over the run's predict set (its test set when the datamodule has none):
    the outputs, concatenated when they can be, and which loader served them."""
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=restored.accelerator, devices=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False,
        )
        if has_predict_loader(datamodule):
            source = "predict_dataloader()"
            outputs = trainer.predict(restored.module, datamodule=datamodule)
        else:
            source = "test_dataloader() (the datamodule has no predict_dataloader)"
            datamodule.prepare_data()
            datamodule.setup("test")
            outputs = trainer.predict(restored.module, dataloaders=datamodule.test_dataloader())
    return concatenate(list(outputs or [])), source


def predict_failure(module: pl.LightningModule, error: BaseException) -> str:
    """Why Trainer.predict failed, in one line: where (the default predict_step's forward(batch) or the
    module's own predict_step), the exception, and what to change."""
    name = type(module).__name__
    if is_overridden("predict_step", module, pl.LightningModule):
        return f"Trainer.predict failed in {name}.predict_step: {describe(error)}; fix predict_step (it runs on the run's test batches)"
    return (
        f"Trainer.predict failed: Lightning's default predict_step calls {name}.forward(batch) with the whole batch, "
        f"and it raised {describe(error)}; {FORWARD_FIX}, and a predict_step(self, batch, batch_idx) that returns self(batch[0])"
    )


def show_standalone(restored: Restored, datamodule: pl.LightningDataModule) -> None:
    """The workload's plain PyTorch part on its own, on real test inputs, against the module's forward."""
    part = restored.workload.standalone_submodule(restored.module)
    if part is None:
        return
    device = next(restored.module.parameters()).device
    x = input_batch(datamodule, STANDALONE_SAMPLES).to(device)
    submodule = part.module
    submodule.eval()
    with torch.no_grad():
        alone = submodule(part.prepare(x))
        full = restored.module(x)
    print(f"\n{part.name} on its own (plain PyTorch: {part.name} = model.{part.name}; {part.name}.eval()), {len(x)} test inputs:")
    for row in alone.detach().cpu().float():
        print("  [" + ", ".join(f"{v:+.4f}" for v in row.flatten().tolist()) + "]")
    if alone.shape == full.shape:
        diff = (alone.float() - full.float()).abs().max().item()
        print(f"max abs diff vs the LightningModule's forward on the same inputs: {diff:.3g}")
    else:
        print(f"(the LightningModule's forward gives shape {tuple(full.shape)}, {part.name} gives {tuple(alone.shape)})")


def main(args: argparse.Namespace) -> int:
    restored = restore(
        args.run_dir, args.trick, args.workload, args.accelerator, args.repeat, args.checkpoint,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(describe_row(restored))
    print(describe_checkpoint(restored))
    for note in restored.notes:
        print(f"note: {note}")
    require_forward(restored.module, "predict")
    datamodule = datamodule_for(restored)  # loaded once, for the predictions and the standalone demo
    try:
        outputs, source = predict(restored, datamodule)
    except UserError:
        raise
    except Exception as error:  # the module's own code failed: one line with the cause and the fix
        raise UserError(predict_failure(restored.module, error)) from None
    out = args.out or Path(restored.spec.run_dir) / "predictions" / f"{restored.spec.run_id}-{restored.checkpoint}.pt"
    save_bytes(outputs, out)
    if isinstance(outputs, torch.Tensor):
        what = f"{len(outputs)} samples, output shape {tuple(outputs.shape)} {str(outputs.dtype).removeprefix('torch.')}"
    else:
        what = f"{len(outputs)} batches of {type(outputs[0]).__name__ if outputs else 'nothing'} (kept as a list)"
    print(f"predicted with {restored.checkpoint}.ckpt on {restored.accelerator}, data from the run's {source}: {what}")
    print(f"wrote {out}")
    show_standalone(restored, datamodule)
    return 0
