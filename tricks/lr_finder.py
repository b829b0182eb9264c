"""The learning-rate finder: an LR range test before fit, then training with its suggestion.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#learning-rate-finder
(after Smith, "Cyclical Learning Rates for Training Neural Networks", https://arxiv.org/abs/1506.01186).
``Tuner.lr_find`` raises the LR step by step from ``min_lr`` to ``max_lr`` over ``num_training``
steps, restores the weights, and suggests the LR where the loss fell fastest; the module's ``lr``
is set to it and ``configure_optimizers`` builds the real optimizer with it.

Pitfall guarded here: the search obeys the Trainer's ``max_epochs`` (Lightning issue 16561, closed
as won't fix), so on a small dataset with a short budget it stops early and never sweeps the upper
LRs, which biases the suggestion low. The epoch limits are lifted for the search only (its length
stays ``num_training`` steps) and restored before fit.

Known limits of the suggestion itself, recorded rather than "fixed" (the row stays Lightning's):
its smoothed loss starts from zero and climbs over the first steps (issue 14167), and the steepest
slope is taken against the LR rather than its logarithm in exponential mode (issue 21141, PR 21171
open), so noise on the flat start can win. When the suggested LR comes before the curve's highest
point on the way down to its minimum, i.e. the loss still rises after it, the row gets a warning.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.tuner import Tuner

from harness.errors import TrickFailed, TrickSkipped
from harness.refusals import refuse_several_optimizers
from harness.trick import Setup, Trick, add_warning, register_trick

# Lightning's suggestion() drops the first 10 and the last point, and needs 2 finite ones left.
MIN_POINTS = 13


@contextmanager
def epoch_limits_lifted(trainer: pl.Trainer) -> Iterator[None]:
    """Let a tuner search run its own number of steps, whatever max_epochs/min_epochs the fit has."""
    loop = trainer.fit_loop
    saved = (loop.max_epochs, loop.min_epochs)
    loop.max_epochs, loop.min_epochs = -1, 0
    try:
        yield
    finally:
        loop.max_epochs, loop.min_epochs = saved


def rising_after(losses: list[float], index: int | None) -> int | None:
    """Where the loss peaks between a suggestion and the lowest loss after it, when that peak is higher
    than the loss at the suggestion (the loss still rose past the suggested LR); None on a descent."""
    if index is None:
        return None
    after = [(i, loss) for i, loss in enumerate(losses) if i > index and math.isfinite(loss)]
    if not after:
        return None
    bottom = min(after, key=lambda item: item[1])[0]
    between = [(i, loss) for i, loss in after if i < bottom]
    if not between:
        return None
    peak, value = max(between, key=lambda item: item[1])
    return peak if value > losses[index] else None


def module_lr(module: pl.LightningModule) -> float | None:
    """The learning rate Tuner.lr_find sets: ``lr`` or ``learning_rate``, on the module or its hparams."""
    for name in ("lr", "learning_rate"):
        for value in (getattr(module, name, None), module.hparams.get(name)):
            if value is not None:
                return value
    return None


@register_trick
@dataclass
class LRFinder(Trick):
    name = "lr-finder"
    changes_budget = True  # judged on time to target and final loss (harness.report.verdicts)
    summary = "LR range test with Tuner.lr_find before fit, then train with the suggested LR."
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#learning-rate-finder"
    tune_order = 20  # after the batch size finder: the best LR depends on the batch size

    min_lr: float = 1e-8
    max_lr: float = 1.0
    num_training: int = 100
    mode: Literal["exponential", "linear"] = "exponential"
    early_stop_threshold: float | None = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.min_lr < self.max_lr:
            raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={self.min_lr}, max_lr={self.max_lr}")
        if self.num_training < 1:
            raise ValueError(f"num_training must be >= 1, got {self.num_training}")
        if self.mode not in ("exponential", "linear"):
            raise ValueError(f"mode {self.mode!r} is not valid; use any of: exponential, linear")
        if self.early_stop_threshold is not None and not self.early_stop_threshold > 0:
            raise ValueError(f"early_stop_threshold must be > 0 or none, got {self.early_stop_threshold}")

    def apply(self, setup: Setup) -> None:
        if module_lr(setup.module) is None:
            raise TrickSkipped(
                f"lr-finder needs an lr or learning_rate attribute (Tuner.lr_find sets it): "
                f"{type(setup.module).__name__} (and its hparams) has neither"
            )
        refuse_several_optimizers(
            self.name, setup.module,
            lambda counts: f"`model.configure_optimizers()` returned {counts[0]}, but learning rate finder only works with single optimizer",
        )
        if not setup.module.automatic_optimization:
            raise TrickSkipped(
                f"lr-finder: {type(setup.module).__name__} uses manual optimization (automatic_optimization is False): "
                "Lightning steps the finder's LR schedule only under automatic optimization, so the search would stay "
                "at min_lr and suggest nothing"
            )
        setup.details.update(
            lr_find_min_lr=self.min_lr,
            lr_find_max_lr=self.max_lr,
            lr_find_num_training=self.num_training,
            lr_find_mode=self.mode,
            initial_lr=module_lr(setup.module),
        )

    def tune(self, trainer: pl.Trainer, setup: Setup) -> None:
        started = time.perf_counter()
        try:
            self._search(trainer, setup, started)
        finally:
            setup.details["tune_s"] = setup.details.get("tune_s", 0.0) + time.perf_counter() - started

    def _search(self, trainer: pl.Trainer, setup: Setup, started: float) -> None:
        # The LR found holds for this batch size; with the batch size finder this is its applied size.
        setup.details["lr_find_batch_size"] = getattr(setup.datamodule, "batch_size", None)
        with epoch_limits_lifted(trainer):
            finder = Tuner(trainer).lr_find(
                setup.module,
                datamodule=setup.datamodule,
                min_lr=self.min_lr,
                max_lr=self.max_lr,
                num_training=self.num_training,
                mode=self.mode,
                early_stop_threshold=self.early_stop_threshold,
            )
        setup.details["lr_find_s"] = time.perf_counter() - started
        if finder is None:
            raise TrickFailed("lr-finder: Tuner.lr_find ran no search (fast_dev_run is on)")
        found = finder.suggestion()
        points = len(finder.results.get("loss", []))
        setup.details["lr_find_points"] = points
        self._save_curve(finder, found, setup)
        if found is None:
            raise TrickFailed(
                f"lr-finder: no LR suggestion: the search recorded {points} loss point(s) and Lightning needs "
                f"at least {MIN_POINTS} finite ones; raise lr-finder.num_training (now {self.num_training}) "
                "or lr-finder.early_stop_threshold"
            )
        used = module_lr(setup.module)
        if used is None or not math.isclose(used, found):
            raise TrickFailed(f"lr-finder: Lightning found lr={found:g} but the module's lr is {used}")
        setup.details["found_lr"] = found
        peak = rising_after(finder.results["loss"], getattr(finder, "_optimal_idx", None))
        if peak is not None:
            add_warning(
                setup.details,
                f"lr-finder: the suggested lr {found:.3g} is not on the loss's descent (the smoothed loss still rises "
                f"to lr {finder.results['lr'][peak]:.3g} before it falls; Lightning issues 14167, 21141); see "
                "lr_curve_png, or narrow the search with lr-finder.min_lr",
            )

    def _save_curve(self, finder: Any, found: float | None, setup: Setup) -> None:
        """The LR-vs-loss curve as JSON (the numbers) and PNG (Lightning's own plot), beside the report."""
        curve = {
            "lr": list(finder.results.get("lr", [])),
            "loss": list(finder.results.get("loss", [])),
            "suggestion": found,
            "suggestion_index": getattr(finder, "_optimal_idx", None),
            "mode": self.mode,
        }
        json_path, json_rel = setup.artifact_path("lr_find.json")
        json_path.write_text(json.dumps(curve, allow_nan=True) + "\n")
        setup.details["lr_curve_json"] = json_rel
        try:
            import matplotlib

            matplotlib.use("Agg")  # a worker has no display; never open a window
            import matplotlib.pyplot as plt
        except ImportError:
            setup.details["lr_curve_png"] = None  # Matplotlib is not installed: the JSON has the numbers
            return
        figure = finder.plot(suggest=found is not None)
        figure.axes[0].set_title(f"LR finder: {setup.spec.label} (suggestion {found:.3g})" if found else "LR finder: no suggestion")
        png_path, png_rel = setup.artifact_path("lr_find.png")
        figure.savefig(png_path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        setup.details["lr_curve_png"] = png_rel
