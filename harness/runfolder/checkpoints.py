"""Checkpoints of a run: ``best.ckpt`` and ``last.ckpt`` through Lightning's ModelCheckpoint.

Every run keeps, under ``<run_dir>/checkpoints/<run_id>/``:

- ``best.ckpt``: the epoch with the lowest monitored validation metric (``val_loss``, or
  ``--monitor``); ``test_loss`` is measured on these weights, as Lightning's ``ckpt_path="best"``;
- ``last.ckpt``: the end of the latest epoch, which ``harness resume`` continues from;
- ``final.ckpt``, only for a trick whose result lives in the weights as fit leaves them and in no
  epoch checkpoint (SWA copies its average into the model when fit ends, after the last
  checkpoint): those runs test the final weights, and the row says so.

Saving happens after validation, while the measuring clock is paused (the meter restarts it at the
next training batch), so checkpoints cost wall time but not samples/s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from harness.measuring.metrics import logged_name
from harness.runfolder.rundir import inside_run_dir, plain_name
from harness.spec import RunSpec

BEST, LAST, FINAL = "best", "last", "final"
CHECKPOINT_NAMES = (BEST, LAST, FINAL)


def checkpoint_dir(run_dir: str | Path, run_id: str) -> Path:
    """``<run_dir>/checkpoints/<run_id>``; the run id must be a plain name (it may come from plan.json)."""
    return Path(run_dir) / "checkpoints" / plain_name(run_id, "run id")


class OwnCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, which trusts only the files it wrote itself, in this process.

    A run reads back checkpoints it has just written: the test phase loads ``best.ckpt``, and the
    LR and batch size finders restore the weights from a temporary checkpoint of Lightning's. Those
    files hold whatever the user's module and its optimizer and scheduler put in them (a numpy
    scalar in a scheduler's state, an activation class in the hyperparameters), which torch's
    weights-only unpickler refuses; they come from this process, so they are read in full. Every
    other file (``resume``'s ``last.ckpt``, from a run folder that may have been downloaded) is read
    weights-only. A file counts as this process's when its path, size and modification time are
    those recorded when it was written (a file replaced since is not). A caller's explicit
    ``weights_only`` wins: True for ``resume``; False from the worker for the ``best.ckpt`` that its
    checkpoint callback saved in this process, which also covers the other ranks of a distributed run
    (only rank 0 writes, so only its plugin saw the file being written).
    """

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _key(path: Any) -> tuple[str, tuple[int, int]] | None:
        try:
            resolved = Path(os.fspath(path)).resolve()
            stat = resolved.stat()
        except (OSError, TypeError):
            return None
        return str(resolved), (stat.st_size, stat.st_mtime_ns)

    def wrote(self, path: Any) -> bool:
        """Whether ``path`` is a file this object wrote and nothing has changed since."""
        key = self._key(path)
        return key is not None and self.written.get(key[0]) == key[1]

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        key = self._key(path)
        if key is not None:
            self.written[key[0]] = key[1]

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is None:
            weights_only = not self.wrote(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        key = self._key(path)
        super().remove_checkpoint(path)
        if key is not None:
            self.written.pop(key[0], None)


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, saving at epoch and validation ends only, with no per-step work.

    Lightning calls six hooks of every callback at every training step and formats each callback's
    ``state_key`` for each call; ModelCheckpoint's is the repr of a dict of five settings. Its
    ``on_train_batch_end`` also checks ``every_n_train_steps`` and ``train_time_interval``, which
    the harness never sets, so that it always returns without saving. Together ~7 us per training
    step per callback (Lightning 2.6.6, this project's 2-core CPU); here the key is formatted once
    and the per-batch check is skipped. The key is ModelCheckpoint's own, class name included, so
    that the callback state in checkpoints written before (``harness resume``) still loads.
    """

    def __init__(
        self, dirpath: Path, filename: str, monitor: str | None = None, mode: str = "min", save_top_k: int = 1,
        auto_insert_metric_name: bool = True,
    ) -> None:
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, mode=mode, save_top_k=save_top_k,
            auto_insert_metric_name=auto_insert_metric_name, enable_version_counter=False,
        )
        self._state_key = ModelCheckpoint.__qualname__ + super().state_key.removeprefix(type(self).__qualname__)
        self.saved_here: set[str] = set()  # the files this callback saved in this process (every rank)

    @override
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.saved_here.add(str(Path(filepath).resolve()))

    def saved(self, path: str | Path) -> bool:
        """Whether this callback saved ``path`` in this process (not a file it took over from a resumed run)."""
        return bool(path) and str(Path(path).resolve()) in self.saved_here

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Nothing: no step- or time-based saving is configured (see the class docstring)."""

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, with the saved paths moved onto this run folder when only the folder moved.

        A resumed run's checkpoint names its folder by absolute path. When the run folder was moved
        or copied to another machine, or the run trained in a Ray task's own folder on its node and
        its files were shipped home, that path is another one with the same ``checkpoints/<run_id>``
        tail; Lightning would then drop ``best_model_score`` and ``best_k_models`` ("The dirpath has
        changed"), and the resumed run would keep its first epoch's weights as the best whatever the
        epochs before had reached. Any other difference is left to Lightning.
        """
        super().load_state_dict(moved_onto(state_dict, self.dirpath))


def moved_onto(state_dict: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """``state_dict`` of a ModelCheckpoint with its paths rebased from its saved ``dirpath`` onto
    ``dirpath`` when both end in the same ``checkpoints/<run_id>``; else ``state_dict`` unchanged."""
    saved = state_dict.get("dirpath")
    if not (isinstance(saved, str) and dirpath) or saved == dirpath or Path(saved).parts[-2:] != Path(dirpath).parts[-2:]:
        return state_dict

    def rebased(path: Any) -> Any:
        if isinstance(path, str) and path.startswith(saved + os.sep):
            return dirpath + path[len(saved):]
        return path

    moved = {key: rebased(value) for key, value in state_dict.items()}
    moved["dirpath"] = dirpath
    if isinstance(state_dict.get("best_k_models"), dict):
        moved["best_k_models"] = {rebased(path): score for path, score in state_dict["best_k_models"].items()}
    return moved


class BestCheckpoint(EpochCheckpoint):
    """``best.ckpt``; it stops ranking epochs when the monitored metric is never logged, instead of failing the run.

    ModelCheckpoint raises once validation has run without the metric; for a module of the user's
    that logs ``val_mse`` while ``--monitor`` says ``val_loss``, that would fail every row over a
    name. Here the best checkpoint is given up (``save_top_k=0``) at the first validation, the
    reason is kept in ``note`` for the row, and the run tests its final weights. (Checked in this
    callback's own ``on_validation_end``, before ModelCheckpoint looks: a separate callback would
    cost every training step a round of hook calls.)
    """

    def __init__(self, dirpath: Path, filename: str, monitor: str) -> None:
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, mode="min", save_top_k=1, auto_insert_metric_name=False)
        self.note = ""

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (trainer.sanity_checking or trainer.state.fn != "fit" or self.save_top_k == 0):
            name = logged_name(trainer.callback_metrics, self.monitor)
            if name is not None and name != self.monitor:  # logged on_step too: rank by the epoch mean
                self.monitor = name
            if name is None:
                logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
                self.note = (
                    f"best.ckpt not kept: {self.monitor!r} is never logged (logged: {logged}); "
                    "name the validation metric with --monitor"
                )
                self.save_top_k = 0
        super().on_validation_end(trainer, pl_module)


@dataclass
class Checkpointing:
    """The two checkpoint callbacks of a run: ``best`` (None without validation) and ``last``.

    Two callbacks, because Lightning 2.6's ``save_last=True`` writes ``last.ckpt`` only at a step
    where a top-k checkpoint was saved too: with ``save_top_k=1`` it stops following the epochs as
    soon as the monitored metric stops improving, and a resume from it would repeat epochs
    (observed here, and reported by Lightning users since 2.6.0). A second callback with no
    monitor and ``save_top_k=1`` keeps exactly one file, rewritten at every epoch end.
    """

    best: BestCheckpoint | None
    last: EpochCheckpoint

    @property
    def callbacks(self) -> list[pl.Callback]:
        return [callback for callback in (self.best, self.last) if callback is not None]

    @property
    def note(self) -> str:
        """Why ``best.ckpt`` was given up ('' when it was not)."""
        return self.best.note if self.best is not None else ""


def checkpointing(spec: RunSpec, has_validation: bool) -> Checkpointing:
    """``best.ckpt`` by ``spec.monitor`` (lowest wins) and ``last.ckpt``, under the run's checkpoint folder.

    Without a validation loop there is nothing to rank epochs by: only ``last.ckpt`` is kept.
    Version counters are off, which keeps the names fixed, also across a resume (no ``best-v1.ckpt``).
    """
    folder = checkpoint_dir(spec.run_dir, spec.run_id)
    last = EpochCheckpoint(dirpath=folder, filename=LAST, monitor=None, save_top_k=1)
    if not has_validation:
        return Checkpointing(None, last)
    return Checkpointing(BestCheckpoint(dirpath=folder, filename=BEST, monitor=spec.monitor), last)


def relative(path: str | Path, run_dir: str | Path) -> str:
    """A path inside the run folder as the rows store it, so that a moved report still finds it."""
    try:
        return str(Path(path).resolve().relative_to(Path(run_dir).resolve()))
    except ValueError:
        return str(path)


def saved_checkpoints(checkpoints: Checkpointing, run_dir: str | Path) -> dict[str, str]:
    """``{"best": ..., "last": ...}`` for the files that exist, relative to the run folder."""
    found = {}
    paths = ((BEST, checkpoints.best.best_model_path if checkpoints.best else ""), (LAST, checkpoints.last.best_model_path))
    for name, path in paths:
        if path and Path(path).is_file():
            found[name] = relative(path, run_dir)
    return found


def best_summary(callback: ModelCheckpoint | None, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """What the row says about the best checkpoint: the monitored score and the epoch it comes from
    (the validation point of the run's curve with that score)."""
    if callback is None or not callback.best_model_path or callback.best_model_score is None:
        return {}
    score = float(callback.best_model_score)
    summary: dict[str, Any] = {"monitor": callback.monitor, "best_score": score}
    matching = [point["epoch"] for point in curve if point.get("val_loss") is not None and abs(point["val_loss"] - score) <= 1e-12 + 1e-6 * abs(score)]
    if matching:
        summary["best_epoch"] = matching[0]
    return summary


def resolve(run_dir: str | Path, stored: str) -> Path:
    """A checkpoint path from a row or a spec (relative to its run folder) as a path on this machine.

    The value comes from the run's files, which may have been crafted: it must stay inside the run
    folder (:func:`harness.runfolder.rundir.inside_run_dir`), else a UserError.
    """
    return inside_run_dir(run_dir, stored, "checkpoint path")
