"""What Lightning refuses by design, found before a run where possible.

Some tricks cannot work with some modules, and Lightning says so: gradient clipping and gradient
accumulation under manual optimization (``Trainer`` raises "Automatic gradient clipping is not
supported for manual optimization"), the LR finder and SWA with several optimizers ("learning rate
finder only works with single optimizer", "SWA currently works with 1 `optimizer`"). A GAN, which
steps two optimizers by hand, could never get a green row for them. These are skips with
Lightning's reason (:class:`harness.errors.TrickSkipped`), not failures: tricks call
:func:`refuse_manual_optimization` and :func:`optimizer_counts` in ``apply``, and the worker turns
a refusal found only at run time (:func:`refused_by_design`) into the same skip.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from harness.errors import TrickSkipped

# Lightning's own messages (2.6) for the refusals above; a MisconfigurationException that starts with
# one of them, raised in a run with tricks, is the trick's skip (harness.worker).
LIGHTNING_REFUSALS = (
    "Automatic gradient clipping is not supported for manual optimization",
    "Automatic gradient accumulation is not supported for manual optimization",
    "`model.configure_optimizers()` returned",  # ... but learning rate finder only works with single optimizer
    "SWA currently works with 1 `optimizer`",
    "SWA currently not supported for more than 1 `lr_scheduler`",
)


def refused_by_design(error: BaseException) -> bool:
    """Whether ``error`` is one of Lightning's refusals of a trick for this module (LIGHTNING_REFUSALS)."""
    text = str(error).strip()
    return type(error).__name__ == "MisconfigurationException" and any(text.startswith(m) for m in LIGHTNING_REFUSALS)


def refuse_manual_optimization(trick: str, module: pl.LightningModule, lightning_says: str, fix: str) -> None:
    """TrickSkipped when ``module`` optimizes manually (``automatic_optimization = False``), with Lightning's words."""
    if not module.automatic_optimization:
        raise TrickSkipped(
            f"{trick}: {type(module).__name__} uses manual optimization (automatic_optimization is False), and "
            f"Lightning says: \"{lightning_says}\"; {fix}"
        )


def optimizer_counts(module: pl.LightningModule) -> tuple[int, int] | None:
    """(optimizers, LR schedulers) that ``configure_optimizers`` returns, by calling it once on the bare module.

    The optimizers it builds are thrown away (the Trainer calls it again at fit). None when it cannot
    be called without a Trainer (``self.trainer.estimated_stepping_batches``...) or its answer is not
    understood: then Lightning's refusal comes at run time, and the worker makes it the same skip.
    """
    try:
        from lightning.pytorch.core.optimizer import _configure_optimizers

        optimizers, schedulers, _ = _configure_optimizers(module.configure_optimizers())
    except Exception:
        return None
    return len(optimizers), len(schedulers)


def refuse_several_optimizers(trick: str, module: pl.LightningModule, lightning_says: Any) -> None:
    """TrickSkipped when ``configure_optimizers`` returns more than one optimizer (a GAN's two)."""
    counts = optimizer_counts(module)
    if counts is not None and counts[0] > 1:
        says = lightning_says(counts) if callable(lightning_says) else lightning_says
        raise TrickSkipped(
            f"{trick}: {type(module).__name__}.configure_optimizers returns {counts[0]} optimizers, and Lightning "
            f"says: \"{says}\""
        )
