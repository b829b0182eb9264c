"""One run in-process: a full result row, the same start for every trick, failures as rows."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from harness.worker import execute


class FirstWeights(pl.Callback):
    """Keeps a copy of the weights as they were when training started."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_baseline_row_is_complete(make_spec) -> None:
    result = execute(make_spec())
    assert result.status == "ok", result.reason
    assert result.trick == "baseline" and result.precision == "32-true" and result.batch_size == 64
    assert result.samples_per_s > 0 and result.step_time_ms > 0 and result.blocks_measured >= 2
    assert result.peak_mem_bytes > 100 * 2**20 and result.mem_kind == "max_rss_fit"
    assert all(math.isfinite(v) for v in (result.train_loss, result.val_loss, result.test_loss))
    assert result.wall_s >= result.fit_s > 0
    # digits: 1150 training images, 18 batches of 64 per epoch, 2 epochs
    assert result.steps == result.optimizer_steps == 36 and result.epochs == 2
    assert [p["epoch"] for p in result.curve] == [0, 1] and result.curve[-1]["samples"] == 2300
    assert result.curve[-1]["val_loss"] < result.curve[0]["val_loss"]
    assert result.device_name and result.loader == "device"


def test_every_run_starts_from_the_same_weights_and_data(make_spec) -> None:
    first, second = FirstWeights(), FirstWeights()
    a = execute(make_spec(max_epochs=1), extra_callbacks=[first])
    b = execute(make_spec(["grad-clipping"], max_epochs=1), extra_callbacks=[second])
    assert a.status == b.status == "ok"
    assert all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)


def test_training_writes_tensorboard_curves(make_spec, tmp_path: Path) -> None:
    """Built-in workloads log train_loss only on the steps the logger writes: check they land."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = execute(make_spec(max_epochs=2, block_steps=4))
    assert result.status == "ok"
    (event_dir,) = {p.parent for p in (tmp_path / "tb" / "autoencoder" / "cpu" / "baseline").rglob("events.*")}
    events = EventAccumulator(str(event_dir))
    events.Reload()
    train = events.Scalars("train_loss")
    assert len(train) == 36 // 4  # every block_steps-th of 36 steps
    val = events.Scalars("val_loss")
    assert len(val) == 2 + 1  # one per epoch during fit, one from the final Trainer.validate
    assert val[-1].value == result.val_loss


def test_diverging_training_is_a_failed_row_not_a_crash(make_spec) -> None:
    result = execute(make_spec(lr=1e30, max_epochs=1))
    assert result.status == "failed"
    assert "non-finite loss" in result.reason


def test_unknown_workload_is_a_failed_row(make_spec) -> None:
    result = execute(make_spec(workload="no-such-workload"))
    assert result.status == "failed" and "no-such-workload" in result.reason
