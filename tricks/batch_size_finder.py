"""The batch size finder: grow the batch until it no longer fits, then train with what was found.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#batch-size-finder
``Tuner.scale_batch_size`` runs a few steps per trial through the datamodule's ``batch_size``
(``power``: double until out of memory; ``binsearch``: then bisect) and restores the weights.

Pitfalls guarded here:
- The size found can run out of memory in the fit that follows (Lightning issues 8028 and
  20231: the search's few steps do not reach the fit's peak, e.g. optimizer state, fragmentation).
  A safety factor (0.9x by default) is applied to the found size; both are recorded.
- Without out-of-memory errors (a CPU, or a large GPU with a small model) the search only stops at
  its cap. It is capped at the training set size: a batch larger than the data is no batch at all;
  and at the largest batch that still leaves the run's budget enough training batches for
  ``MEASURED_BLOCKS`` timing blocks after the warm-up (:func:`measurable_cap`; unless ``max_val`` is
  given): else the finder climbs to the training-set size, an epoch is 1-2 batches, and the row
  measures nothing (or one block).
- Lightning refuses to tune the batch size under a distributed strategy: skipped with that reason.
- In ``power`` mode Lightning can return the next doubling without having tried it (issue 18426;
  in 2.6 it still happens when the doubling passes ``max_val``): the answer is clamped to the cap.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.parsing import lightning_setattr

from harness.errors import TrickFailed, TrickSkipped
from harness.measuring.distributed import is_distributed
from harness.measuring.measure import AUTO_BLOCK_STEPS
from harness.trick import Setup, Trick, register_trick


def train_set_size(datamodule: pl.LightningDataModule, trainer: pl.Trainer) -> int | None:
    """Samples in the training set, or None when the loader does not tell.

    The datamodule is set up on the Trainer's device first (Lightning's own ``setup`` call at fit
    time then finds it done), so that the data lands where it would have anyway.
    """
    if getattr(datamodule, "device", "absent") is None:
        datamodule.device = trainer.strategy.root_device
    datamodule.setup("fit")
    loader: Any = datamodule.train_dataloader()
    for source in (getattr(loader, "dataset", None), getattr(loader, "x", None)):
        if source is not None and hasattr(source, "__len__"):
            return len(source)
    return None


MEASURED_BLOCKS = 2  # timing blocks after the warm-up that the found batch size must leave the budget


def batches_needed(block_steps: int, warmup_blocks: int) -> int:
    """Training batches a run needs for its timing: ``block_steps x (warmup_blocks + MEASURED_BLOCKS)``.
    With ``--block-steps auto`` (0) the blocks shrink with the budget down to AUTO_BLOCK_STEPS[0]
    batches, so the budget must hold that many blocks of that size, and as many as a speed verdict
    needs (harness.report.verdicts.MIN_BLOCKS, 10): fewer would be timed but never judged."""
    if block_steps:
        return block_steps * (warmup_blocks + MEASURED_BLOCKS)
    return AUTO_BLOCK_STEPS[0] * (warmup_blocks + VERDICT_BLOCKS)


VERDICT_BLOCKS = 10  # harness.report.verdicts.MIN_BLOCKS (the report is not imported by a worker)


def measurable_cap(train_size: int | None, epochs: int | None, block_steps: int, warmup_blocks: int) -> int | None:
    """The largest batch size whose ``epochs`` epochs over ``train_size`` samples still run
    :func:`batches_needed` training batches; None when unbounded or unknown."""
    if not train_size or not epochs or epochs < 1:
        return None
    needed = batches_needed(block_steps, warmup_blocks)
    per_epoch = -(-needed // epochs)
    return max(1, train_size // per_epoch)


def blocks_text(block_steps: int) -> str:
    if block_steps:
        return f"{MEASURED_BLOCKS} of --block-steps {block_steps}"
    return f"{VERDICT_BLOCKS} of at least {AUTO_BLOCK_STEPS[0]} batches, --block-steps auto"


def batch_size_holder(setup: Setup) -> int | None:
    """The batch size Lightning's finder would scale: the datamodule's, else the module's (or its hparams')."""
    for value in (
        getattr(setup.datamodule, "batch_size", None),
        getattr(setup.module, "batch_size", None),
        setup.module.hparams.get("batch_size"),
    ):
        if value is not None:
            return value
    return None


@register_trick
@dataclass
class BatchSizeFinder(Trick):
    name = "batch-size-finder"
    changes_budget = True  # judged on time to target and final loss (harness.report.verdicts)
    summary = (
        "Tuner.scale_batch_size through the datamodule's batch_size, capped at the training set size; "
        "train with safety x the size found."
    )
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#batch-size-finder"
    tune_order = 10  # before the LR finder: the best LR depends on the batch size

    mode: Literal["power", "binsearch"] = "power"
    safety: float = 0.9
    steps_per_trial: int = 3
    init_val: int = 2
    max_trials: int = 25
    max_val: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("power", "binsearch"):
            raise ValueError(f"mode {self.mode!r} is not valid; use any of: power, binsearch")
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1] (the share of the found size to train with), got {self.safety}")
        counts = {"steps_per_trial": self.steps_per_trial, "init_val": self.init_val, "max_trials": self.max_trials}
        for field, value in counts.items():
            if value < 1:
                raise ValueError(f"{field} must be >= 1, got {value}")
        if self.max_val is not None and self.max_val < self.init_val:
            raise ValueError(f"max_val must be >= init_val ({self.init_val}) or none, got {self.max_val}")

    def apply(self, setup: Setup) -> None:
        spec = setup.spec
        if is_distributed(spec.strategy, spec.devices, spec.num_nodes):
            raise TrickSkipped(
                f"batch-size-finder: Lightning's Tuner.scale_batch_size refuses distributed strategies "
                f"(--strategy {spec.strategy}, {spec.devices} device(s) x {spec.num_nodes} node(s)): "
                "\"Tuning the batch size is currently not supported with distributed strategies\"; run it with --devices 1"
            )
        initial = batch_size_holder(setup)
        if initial is None:
            raise TrickSkipped(
                f"batch-size-finder needs a batch_size attribute (Tuner.scale_batch_size sets it): neither "
                f"{type(setup.module).__name__} (nor its hparams) nor {type(setup.datamodule).__name__} has one"
            )
        setup.details.update(batch_size_find_mode=self.mode, safety=self.safety, initial_batch_size=initial)

    def tune(self, trainer: pl.Trainer, setup: Setup) -> None:
        started = time.perf_counter()
        size = train_set_size(setup.datamodule, trainer)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        measurable = measurable_cap(size, epochs, setup.spec.block_steps, setup.spec.warmup_blocks)
        if self.max_val is not None or (measurable is not None and measurable < self.init_val):
            measurable = None  # an explicit max_val is the user's; a budget too short for any search is the run's check
        caps = [cap for cap in (self.max_val, size, measurable) if cap is not None]
        search_cap = min(caps) if caps else None
        if measurable is not None and search_cap == measurable and (size is None or measurable < size):
            setup.details["measure_cap_note"] = (
                f"search capped at {measurable}: a larger batch would leave the budget ({epochs} epoch(s) of "
                f"{size} samples) fewer than {batches_needed(setup.spec.block_steps, setup.spec.warmup_blocks)} "
                f"training batches, too few for the timing blocks ({blocks_text(setup.spec.block_steps)}) "
                "after the warm-up (on a CPU the finder never runs out of memory and climbs to the training-set size)"
            )
        kwargs: dict[str, Any] = dict(
            mode=self.mode, steps_per_trial=self.steps_per_trial, init_val=self.init_val, max_trials=self.max_trials
        )
        accepted = inspect.signature(Tuner.scale_batch_size).parameters
        if "margin" in accepted:
            kwargs["margin"] = 0.0  # Lightning's own margin (binsearch only); ours applies to both modes
        if search_cap is not None and "max_val" in accepted:
            kwargs["max_val"] = search_cap
        found = Tuner(trainer).scale_batch_size(setup.module, datamodule=setup.datamodule, **kwargs)
        elapsed = time.perf_counter() - started
        setup.details["batch_size_find_s"] = elapsed
        setup.details["tune_s"] = setup.details.get("tune_s", 0.0) + elapsed
        setup.details.update(train_set_size=size, search_cap=search_cap)
        if found is None:
            raise TrickFailed("batch-size-finder: Tuner.scale_batch_size ran no search (fast_dev_run is on)")
        if search_cap is not None and found > search_cap:
            setup.details["lightning_batch_size"] = found
            setup.details["batch_size_note"] = (
                f"Lightning returned {found}, above the search cap {search_cap} and never tried "
                f"(Lightning issue 18426); clamped to {search_cap}"
            )
            found = search_cap
        applied = max(1, int(found * self.safety))
        # Lightning sets every holder of batch_size (module, its hparams, the datamodule); so do we.
        if hasattr(setup.module, "batch_size") or "batch_size" in setup.module.hparams:
            lightning_setattr(setup.module, "batch_size", applied)
        if hasattr(setup.datamodule, "batch_size"):
            setup.datamodule.batch_size = applied
        setup.details.update(found_batch_size=found, applied_batch_size=applied)

