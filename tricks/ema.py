"""EMA: an exponential moving average of the weights, through Lightning's own callback.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#weight-averaging
``EMAWeightAveraging`` (Lightning 2.6) keeps ``AveragedModel`` copies updated after the optimizer steps
it is told to (every ``update_every_n_steps``, from ``update_starting_at_step``). Validation during fit
runs on the average (swapped in and out around each validation epoch), fit ends with the average in
the model, and every checkpoint's ``state_dict`` holds the average (the raw weights go under
``current_model_state``): so the val column, the curve, ``best.ckpt`` and the test all see the EMA
weights, and the row says so. With the default decay 0.999 the average remembers about 1,000 steps:
a run much shorter than that is validated on weights close to the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import TrickSkipped
from harness.trick import Conflict, Setup, Trick, register_trick


@register_trick
@dataclass
class Ema(Trick):
    name = "ema"
    summary = "EMAWeightAveraging: validate, test and checkpoint an exponential moving average of the weights."
    source = "https://lightning.ai/docs/pytorch/stable/advanced/training_tricks.html#weight-averaging"

    decay: float = 0.999
    update_every_n_steps: int = 1
    update_starting_at_step: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        if self.update_every_n_steps < 1:
            raise ValueError(f"update_every_n_steps must be >= 1, got {self.update_every_n_steps}")

    def apply(self, setup: Setup) -> None:
        try:
            from lightning.pytorch.callbacks import EMAWeightAveraging
        except ImportError:
            import lightning

            raise TrickSkipped(f"EMAWeightAveraging needs Lightning 2.6+, this is {lightning.__version__}") from None
        setup.callbacks.append(
            EMAWeightAveraging(
                decay=self.decay, update_every_n_steps=self.update_every_n_steps, update_starting_at_step=self.update_starting_at_step
            )
        )
        setup.details.update(
            ema_decay=self.decay, ema_update_every_n_steps=self.update_every_n_steps,
            ema_update_starting_at_step=self.update_starting_at_step,
            ema_weights_used_by="validation during fit, the final weights and every checkpoint's state_dict "
            "(raw weights kept under current_model_state): the val and test columns are the average's",
        )

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        conflicts = super().conflicts(others)
        if any(other.name == "swa" for other in others):
            conflicts.append(Conflict("refuse", "ema and swa each average the weights and each swaps its average into the model: run them apart"))
        return conflicts
