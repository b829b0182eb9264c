"""Checkpoints: best.ckpt and last.ckpt per run, test_loss from the best one, SWA's final weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from harness import worker
from harness.measuring.measure import ThroughputMeter
from harness.runfolder.checkpoints import checkpoint_dir, checkpointing
from harness.spec import RunSpec
from harness.testing import SpoilLastEpoch
from harness.worker import execute
from harness.workloads.data import DigitsDataModule
from models.autoencoder import LitAutoEncoder


def test_loss_on_weights(path: Path, spec: RunSpec, split: str) -> float:
    """A checkpoint's MSE on one split, without Lightning: batch means weighted by batch size, as ``self.log`` does."""
    model = LitAutoEncoder.load_from_checkpoint(path, map_location="cpu").eval()
    data = DigitsDataModule.from_spec(spec)
    data.setup()
    x, _ = data.splits[split]
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), spec.batch_size):
            batch = x[start : start + spec.batch_size].view(-1, 28 * 28)
            total += float(F.mse_loss(model.decoder(model.encoder(batch)), batch)) * len(batch)
    return total / len(x)


test_loss_on_weights.__test__ = False  # a helper, not a test


def test_best_and_last_are_kept_and_test_loss_comes_from_best(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    spec = make_spec(max_epochs=3)
    result = execute(spec, extra_callbacks=[SpoilLastEpoch()])
    assert result.status == "ok", result.reason
    assert result.details["best_epoch"] == 1  # the spoiled last epoch is not the best
    assert set(result.checkpoints) == {"best", "last"}
    best, last = (tmp_path / result.checkpoints[name] for name in ("best", "last"))
    assert best.name == "best.ckpt" and last.name == "last.ckpt" and best.is_file() and last.is_file()
    scores = [point["val_loss"] for point in result.curve]
    assert result.details["best_score"] == pytest.approx(min(scores))
    assert result.details["best_epoch"] == result.curve[scores.index(min(scores))]["epoch"]
    assert result.details["test_weights"].startswith(f"best.ckpt (epoch {result.details['best_epoch']}")
    # last.ckpt follows every epoch (Lightning 2.6's own save_last=True would have stopped at the best one)
    assert torch.load(last, weights_only=False)["epoch"] == spec.max_epochs - 1
    # test_loss is the best checkpoint's, not the final weights' (val_loss is the final weights')
    assert result.test_loss == pytest.approx(test_loss_on_weights(best, spec, "test"), rel=1e-5)
    assert result.val_loss == pytest.approx(test_loss_on_weights(last, spec, "val"), rel=1e-5)


def test_no_checkpoints_keeps_none_and_tests_the_final_weights(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    result = execute(make_spec(checkpoints=False, max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.checkpoints == {} and not (tmp_path / "checkpoints").exists()
    assert result.details["test_weights"] == "final weights (--no-checkpoints)"


def test_swa_tests_its_averaged_weights_saved_as_final_ckpt(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    spec = make_spec(["swa"], trick_params={"swa": {"budget_epochs": "4", "swa_epoch_start": "0.5"}})
    result = execute(spec)
    assert result.status == "ok", result.reason
    assert result.details["weights_averaged"] is True
    assert set(result.checkpoints) == {"best", "last", "final"}
    final, last = (tmp_path / result.checkpoints[name] for name in ("final", "last"))
    averaged = torch.load(final, weights_only=False)["state_dict"]
    unaveraged = torch.load(last, weights_only=False)["state_dict"]
    assert any(not torch.equal(averaged[key], unaveraged[key]) for key in averaged)
    assert result.details["test_weights"].startswith("final.ckpt: SWA")
    assert result.test_loss == pytest.approx(test_loss_on_weights(final, spec, "test"), rel=1e-5)


def test_checkpoints_are_written_while_the_clock_is_paused(
    make_spec: Callable[..., RunSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving costs wall time, never samples/s: every ModelCheckpoint write happens outside the timed window."""
    meters: list[ThroughputMeter] = []

    class RecordedMeter(ThroughputMeter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            meters.append(self)

    clock_running: list[bool] = []
    save = ModelCheckpoint._save_checkpoint

    def recorded_save(self: ModelCheckpoint, trainer: Any, filepath: str) -> None:
        clock_running.append(meters[0].timer._running)
        save(self, trainer, filepath)

    monkeypatch.setattr(worker, "ThroughputMeter", RecordedMeter)
    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", recorded_save)
    result = execute(make_spec(max_epochs=3))
    assert result.status == "ok", result.reason
    assert len(clock_running) >= 3 + 1  # last.ckpt every epoch, best.ckpt at least once
    assert not any(clock_running)


def test_checkpoint_state_keys_are_model_checkpoints_own(make_spec: Callable[..., RunSpec]) -> None:
    """The harness's checkpoint callbacks file their state under ModelCheckpoint's key, so that a
    last.ckpt written by a plain ModelCheckpoint (earlier versions of the harness) still resumes."""
    spec = make_spec()
    checkpoints = checkpointing(spec, has_validation=True)
    folder = checkpoint_dir(spec.run_dir, spec.run_id)
    plain_best = ModelCheckpoint(dirpath=folder, filename="best", monitor=spec.monitor, mode="min", save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    plain_last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    assert checkpoints.best is not None
    assert checkpoints.best.state_key == plain_best.state_key
    assert checkpoints.last.state_key == plain_last.state_key


def test_a_moved_run_folder_keeps_the_best_score_on_resume(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    """A last.ckpt written under another absolute path of the same run (a copied folder, a Ray task's own
    folder shipped home) resumes with its best score and best paths moved onto this folder; Lightning
    alone would drop them, and the first epoch after the resume would become the best whatever came before."""
    spec = make_spec()
    best = checkpointing(spec, has_validation=True).best
    assert best is not None
    elsewhere = str(tmp_path / "node-folder" / "checkpoints" / spec.run_id)
    saved = {
        "monitor": "val_loss", "best_model_score": torch.tensor(0.25), "best_model_path": f"{elsewhere}/best.ckpt",
        "current_score": torch.tensor(0.3), "dirpath": elsewhere, "best_k_models": {f"{elsewhere}/best.ckpt": torch.tensor(0.25)},
        "kth_best_model_path": f"{elsewhere}/best.ckpt", "kth_value": torch.tensor(0.25), "last_model_path": "",
    }
    best.load_state_dict(saved)
    here = str(Path(best.dirpath))
    assert here == str((Path(spec.run_dir) / "checkpoints" / spec.run_id).resolve()) and float(best.best_model_score) == 0.25
    assert best.best_model_path == best.kth_best_model_path == f"{here}/best.ckpt"
    assert best.best_k_models == {f"{here}/best.ckpt": torch.tensor(0.25)}
    # another run's checkpoint (another tail) is Lightning's business: it warns and keeps no score
    other = checkpointing(spec, has_validation=True).best
    assert other is not None
    with pytest.warns(UserWarning, match="dirpath has changed"):
        other.load_state_dict({**saved, "dirpath": str(tmp_path / "node-folder" / "checkpoints" / "another-run")})
    assert other.best_model_score is None
