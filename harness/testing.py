"""Helpers for tests and benchmarks of this project and of third-party tricks: tiny, fast CPU runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from harness.measuring.measure import BlockTimer
from harness.spec import BASELINE, COMBINE, RunSpec
from harness.trick import Setup, Trick


def tiny_spec(run_dir: Path, tricks: list[str] | None = None, **overrides: Any) -> RunSpec:
    """A RunSpec for a short CPU run of the seed autoencoder on scikit-learn's digits.

    Two epochs of 18 batches (batch 64) in blocks of 4: about a second of training, enough blocks
    for a steady-state reading. Any RunSpec field can be overridden.
    """
    tricks = list(tricks or [])
    label = COMBINE.join(tricks) or BASELINE
    fields: dict[str, Any] = dict(
        run_id=f"autoencoder-cpu-{label}-r0",
        label=label,
        tricks=tricks,
        trick_params={},
        workload="autoencoder",
        dataset="digits",
        dataset_reason="digits requested",
        data_dir=str(run_dir / "data"),
        loader="device",
        accelerator="cpu",
        batch_size=64,
        lr=1e-3,
        max_epochs=2,
        max_steps=-1,
        seed=42,
        repeat=0,
        block_steps=4,
        warmup_blocks=1,
        synthetic_size=512,
        num_workers=0,
        run_dir=str(run_dir),
    )
    fields.update(overrides)
    return RunSpec(**fields)


class SpoilLastEpoch(pl.Callback):
    """Shifts every weight before the last epoch's validation, so that the best epoch is not the last.

    For tests of checkpoints: with it, ``best.ckpt`` and ``last.ckpt`` hold different weights, so a
    test that loads "the best" can tell whether it got it.
    """

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and trainer.current_epoch == trainer.max_epochs - 1:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.add_(0.05)


class _StretchSteps(pl.Callback):
    """Makes every training step take ``factor`` times as long on the harness's own clock: after each
    step it waits ``factor - 1`` times the time that clock counted since the previous step ended.

    Reading the measuring clock (``harness.measuring.measure.BlockTimer``) rather than wall time matters: what
    the clock pauses out (closing a block, validation, epoch ends) must not be stretched, or the
    planted factor would be larger than asked (3 read as ~3.6 with wall time here).
    """

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.last: float | None = None

    @staticmethod
    def _clock(trainer: pl.Trainer) -> float:
        for callback in trainer.callbacks:  # the meter sits in the harness's CallbackGroup
            for member in (callback, *getattr(callback, "members", ())):
                timer = getattr(member, "timer", None)
                if not isinstance(timer, BlockTimer):
                    continue
                running = time.perf_counter() - timer._mark if timer._running else 0.0
                return timer.train_seconds + running
        raise RuntimeError("test-slowdown: no harness BlockTimer among the Trainer's callbacks")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = self._clock(trainer)
        if self.last is not None:
            # a busy wait, not time.sleep: a sleep of a millisecond or two wakes late on a loaded machine
            # (the scheduler's latency), which would plant a larger factor than asked for
            deadline = time.perf_counter() + (self.factor - 1.0) * (now - self.last)
            while time.perf_counter() < deadline:
                pass
        self.last = self._clock(trainer)


@dataclass
class Slowdown(Trick):
    """Test-only trick with a planted effect: its throughput is ``1 / factor`` of the baseline's.

    Not registered here (the registry's tricks are what users run); a test registers it, in the worker
    processes too, through an entry point (tests/test_verdicts_e2e.py)."""

    name = "test-slowdown"
    summary = "Test only: every training step takes `factor` times as long (a wait after each step)."
    factor: float = 2.0

    def apply(self, setup: Setup) -> None:
        setup.callbacks.append(_StretchSteps(self.factor))
        setup.details.update(slowdown_factor=self.factor)
