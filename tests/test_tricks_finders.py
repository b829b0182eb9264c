"""The LR and batch size finders: what they find is what training then uses, and their pitfalls are guarded."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from harness.worker import execute


class TrainingProbe(pl.Callback):
    """Records the optimizer's LR when training starts and the size of every training batch."""

    def __init__(self) -> None:
        self.lr: float | None = None
        self.batch_sizes: list[int] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.batch_sizes.append(len(batch[0]))


def no_tuner_checkpoints_left(*folders: Path) -> bool:
    return not any(path for folder in folders for path in folder.rglob(".*.ckpt"))


def test_training_uses_the_lr_the_finder_found(make_spec, tmp_path: Path) -> None:
    probe = TrainingProbe()
    result = execute(make_spec(["lr-finder"], max_epochs=1), extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    found = result.details["found_lr"]
    assert found != 1e-3  # the spec's LR: the finder really changed it
    assert probe.lr == found
    assert result.tune_s > 0 and result.details["tune_s"] <= result.tune_s <= result.wall_s
    # One epoch is 18 batches, yet the search ran its 100 steps (Lightning issue 16561 guarded).
    assert result.details["lr_find_points"] == 100
    curve = json.loads((tmp_path / result.details["lr_curve_json"]).read_text())
    assert len(curve["lr"]) == len(curve["loss"]) == 100 and curve["suggestion"] == found
    assert curve["lr"][-1] > 0.1  # the sweep reached the upper LRs
    assert (tmp_path / result.details["lr_curve_png"]).stat().st_size > 1000
    assert no_tuner_checkpoints_left(tmp_path, Path.cwd())


def test_a_search_without_suggestion_is_a_failed_row(make_spec) -> None:
    spec = make_spec(["lr-finder"], max_epochs=1, trick_params={"lr-finder": {"num_training": "5"}})
    result = execute(spec)
    assert result.status == "failed"
    assert "no LR suggestion" in result.reason and "lr-finder.num_training" in result.reason
    assert result.details["lr_find_points"] == 5 and "lr_curve_json" in result.details


def test_training_uses_the_batch_size_applied_after_the_safety_factor(make_spec, tmp_path: Path) -> None:
    probe = TrainingProbe()
    # init_val=256 only shortens the search (256, 512, 1024, then the cap); the default starts at 2.
    params = {"batch-size-finder": {"safety": "0.5", "init_val": "256"}}
    result = execute(make_spec(["batch-size-finder"], max_epochs=1, trick_params=params), extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    details = result.details
    # On a CPU nothing runs out of memory: the search stops at its cap, the training set size.
    assert details["train_set_size"] == details["search_cap"] == details["found_batch_size"] == 1150
    assert details["applied_batch_size"] == 575 == result.batch_size
    assert probe.batch_sizes == [575, 575]
    assert no_tuner_checkpoints_left(tmp_path, Path.cwd())


def test_binsearch_mode_and_an_explicit_cap(make_spec) -> None:
    probe = TrainingProbe()
    params = {"batch-size-finder": {"mode": "binsearch", "max_val": "200", "init_val": "64"}}
    result = execute(make_spec(["batch-size-finder"], max_epochs=1, trick_params=params), extra_callbacks=[probe])
    assert result.status == "ok", result.reason
    assert result.details["batch_size_find_mode"] == "binsearch"
    assert result.details["found_batch_size"] == 200 and result.details["applied_batch_size"] == 180
    assert set(probe.batch_sizes[:-1]) == {180}


def test_a_suggestion_before_the_loss_starts_falling_is_flagged() -> None:
    from tricks.lr_finder import rising_after

    #          0    1    2    3    4    5    6    7
    curve = [0.1, 0.2, 0.21, 0.22, 0.2, 0.1, 0.05, 0.3]  # rises, falls to a minimum at 6, diverges
    assert rising_after(curve, 2) == 3  # suggested on the rise: the loss still climbs to index 3
    assert rising_after(curve, 4) is None  # suggested on the descent
    assert rising_after(curve, None) is None


def test_with_auto_block_steps_the_search_leaves_the_blocks_a_speed_verdict_needs(make_spec) -> None:
    """--block-steps auto (0, the default) once divided by zero here; the cap now keeps 10 blocks of 2
    batches after the warm-up, and the run times at least 10 blocks."""
    from tricks.batch_size_finder import VERDICT_BLOCKS, batches_needed, measurable_cap

    assert batches_needed(0, 1) == 2 * (1 + VERDICT_BLOCKS)
    assert measurable_cap(1150, 3, 0, 1) == 1150 // -(-22 // 3)  # 8 batches an epoch, 24 in 3 epochs
    params = {"batch-size-finder": {"init_val": "64"}}
    result = execute(make_spec(["batch-size-finder"], max_epochs=3, block_steps=0, trick_params=params))
    assert result.status == "ok", result.reason
    assert result.details["search_cap"] == measurable_cap(1150, 3, 0, 1)
    assert result.blocks_measured is not None and result.blocks_measured >= VERDICT_BLOCKS
