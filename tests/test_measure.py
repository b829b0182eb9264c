"""The timing protocol: blocks, warm-up, pauses, loss read at block edges, NaN caught, spread."""

from __future__ import annotations

import math
import time

import pytest
import torch

from harness.errors import NonFiniteLoss
from harness.measuring.measure import Block, BlockTimer, batch_size_of, summarise


def run_batches(timer: BlockTimer, count: int, seconds: float = 0.0, loss: float = 1.0, samples: int = 8) -> None:
    for _ in range(count):
        timer.resume()
        if seconds:
            time.sleep(seconds)
        timer.add_batch(samples, torch.tensor(loss))


def test_blocks_close_every_block_steps_and_warmup_is_dropped() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=3, warmup_blocks=1)
    run_batches(timer, 9)
    timer.finish()
    assert [b.batches for b in timer.blocks] == [3, 3, 3]
    assert timer.summary().blocks == 2  # the first block is warm-up


def test_paused_time_is_not_counted() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=2, warmup_blocks=0)
    run_batches(timer, 1, seconds=0.01)
    timer.pause()
    time.sleep(0.2)  # "validation"
    run_batches(timer, 1, seconds=0.01)
    assert len(timer.blocks) == 1
    assert 0.015 < timer.blocks[0].seconds < 0.15


def test_short_last_block_is_not_timed_but_its_loss_is_checked() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=10, warmup_blocks=0)
    run_batches(timer, 10)
    run_batches(timer, 2, loss=float("nan"))
    with pytest.raises(NonFiniteLoss, match="nan"):
        timer.finish()


def test_nan_loss_is_caught_at_the_block_edge() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=4)
    run_batches(timer, 3, loss=float("inf"))
    with pytest.raises(NonFiniteLoss):
        run_batches(timer, 1)


def test_epoch_loss_is_the_mean_with_lightnings_accumulation_scale_undone() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=100)
    timer.loss_scale = 4.0  # Lightning hands callbacks loss / accumulate_grad_batches
    for value in (0.1, 0.2, 0.3):
        timer.resume()
        timer.add_batch(8, torch.tensor(value / 4))
    timer.end_epoch()
    assert timer.final_train_loss == pytest.approx(0.2)
    assert timer.samples_seen == 24


def test_block_and_epoch_losses_when_blocks_run_across_epoch_ends() -> None:
    """Losses are summed per block at its edge; each epoch still gets the mean of its own batches."""
    timer = BlockTimer(torch.device("cpu"), block_steps=4, warmup_blocks=0)
    for epoch in ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]):
        for value in epoch:
            timer.resume()
            timer.add_batch(8, torch.tensor(value))
        timer.end_epoch()
    timer.finish()
    assert timer.epoch_losses == pytest.approx([2.0, 5.0, 8.0])
    assert [block.loss for block in timer.blocks] == pytest.approx([2.5, 6.5])  # the 1-batch tail is too short to keep


def test_losses_stay_on_the_device_between_block_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-step device work: the loss is neither read nor added to anything until the block edge."""
    timer = BlockTimer(torch.device("cpu"), block_steps=5, warmup_blocks=0)
    calls: list[str] = []
    for name in ("add_", "add", "clone", "item"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    run_batches(timer, 4, loss=0.5)
    assert calls == []
    run_batches(timer, 1, loss=0.5)
    assert calls == ["item"] and timer.blocks[0].loss == pytest.approx(0.5)


def test_bfloat16_losses_are_summed_in_float32() -> None:
    timer = BlockTimer(torch.device("cpu"), block_steps=1000, warmup_blocks=0)
    for _ in range(300):
        timer.resume()
        timer.add_batch(8, torch.tensor(1.0, dtype=torch.bfloat16))
    timer.end_epoch()
    assert timer.final_train_loss == 1.0  # a bfloat16 running sum stalls at 256


def test_summary_reports_median_iqr_and_flags_noise() -> None:
    steady = [Block(10, 1000, 1.0)] * 5
    summary = summarise([Block(10, 1000, 5.0), *steady], warmup_blocks=1)
    assert summary.samples_per_s == 1000 and summary.samples_per_s_iqr == 0 and not summary.noisy
    assert summary.step_time_ms == pytest.approx(100.0)
    noisy = summarise([Block(10, 1000, s) for s in (1.0, 1.0, 2.0, 0.5, 1.0, 2.0)], warmup_blocks=0)
    assert noisy.noisy and noisy.samples_per_s_iqr > 0


def test_too_few_blocks_keeps_warmup_and_says_so() -> None:
    summary = summarise([Block(10, 1000, 1.0)], warmup_blocks=1)
    assert summary.blocks == 1 and "warm-up included" in summary.warning
    assert summarise([], warmup_blocks=1) is None


def test_batch_size_of_tuples_lists_dicts() -> None:
    x = torch.zeros(5, 3)
    assert batch_size_of((x, torch.zeros(5))) == 5
    assert batch_size_of([x]) == 5
    assert batch_size_of({"input": x}) == 5
    assert math.isfinite(Block(1, 5, 0.5).samples_per_s)
