"""The plugin interface: a Trick edits one Setup through Lightning's public API.

A trick is a dataclass whose fields are its parameters (typed, with defaults that
``python -m harness list`` shows and ``--param NAME.FIELD=VALUE`` overrides). ``apply`` changes
the Trainer kwargs, callbacks, module or datamodule before the Trainer exists; ``tune`` runs after
the Trainer exists and before ``fit`` (the LR and batch size finders live there, timed apart).
Whatever a trick did goes into ``setup.details`` so that the report can show it.

Tricks meet in combinations (``bf16-mixed+grad-clipping``). Each trick says what it cannot run
with through ``conflicts``: a refusal stops the plan before any run starts (a UserError naming the
combination and the reason), a warning is printed then and recorded in the row's ``warnings``.
Two tricks that set the same Trainer argument (``trainer_args``) are refused without more code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import lightning.pytorch as pl

from harness.errors import UserError
from harness.params import from_params, parameters
from harness.registry import Registry
from harness.spec import COMBINE, Result, RunSpec, add_warning  # noqa: F401 - add_warning: part of the plugin API

if TYPE_CHECKING:
    from harness.parity import PlainLoop


@dataclass
class Setup:
    """The base training setup that tricks edit, one per run."""

    spec: RunSpec
    module: pl.LightningModule
    datamodule: pl.LightningDataModule
    trainer_kwargs: dict[str, Any]
    callbacks: list[pl.Callback] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def accelerator(self) -> str:
        return self.spec.accelerator

    def artifact_path(self, filename: str) -> tuple[Path, str]:
        """Where a trick saves a file of this run (``<run_dir>/artifacts/<run_id>/``): absolute, and
        relative to the run folder (what goes into ``details``, so that a moved report still finds it)."""
        folder = Path(self.spec.run_dir) / "artifacts" / self.spec.run_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / filename
        return path, str(path.relative_to(self.spec.run_dir))


@dataclass(frozen=True)
class Conflict:
    """Why a trick should not run together with others: ``refuse`` stops the plan, ``warn`` is recorded."""

    level: Literal["refuse", "warn"]
    reason: str


@dataclass
class Trick:
    """Base class of trick plugins. Subclasses set ``name`` and ``summary`` and override ``apply``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""  # where the trick comes from: a Lightning docs page or a paper
    # Trainer arguments this trick owns: a combination of two tricks that set the same one is refused.
    trainer_args: ClassVar[frozenset[str]] = frozenset()
    # Order of the tuning phases in a combination: the batch size is found before the LR, as
    # Lightning's docs advise (the best LR depends on the batch size, not the other way round).
    tune_order: ClassVar[int] = 0
    # Why this trick's result lives in the weights as fit leaves them and in no epoch checkpoint
    # (SWA's average). Non-empty: the run saves final.ckpt and tests it instead of best.ckpt.
    tests_final_weights: ClassVar[str] = ""
    # Whether the trick changes what a run spends or where it stops (a tuning phase, averaging epochs,
    # stopping early): its verdict rests on time to the baseline's val loss and the final loss, not on
    # samples/s alone (harness.report.verdicts).
    changes_budget: ClassVar[bool] = False
    # When the trick pays although this benchmark cannot show it (its benefit is not speed, memory or the
    # loss of a run that trains fine): a verdict of "no gain here" becomes "turn on if <helps_when>".
    helps_when: ClassVar[str] = ""

    def apply(self, setup: Setup) -> None:
        """Change the setup before the Trainer is built. Raise TrickSkipped where it cannot run."""

    def tune(self, trainer: pl.Trainer, setup: Setup) -> None:
        """Optional tuning phase after the Trainer is built and before fit; its time is reported."""

    def record(self, result: Result) -> None:
        """Optional: after fit, validation and test, add to the row what only the run's measurements tell
        (e.g. compile: the first step's time minus the steady step time). Not called for a failed run."""

    def plain_equivalent(self, loop: PlainLoop) -> None:
        """Make the hand-written parity loop (harness.parity) do what this trick does, in plain PyTorch.

        Override it where the trick has such a form (autocast, a GradScaler, ``clip_grad_norm_``...):
        ``python -m harness parity --tricks NAME`` then compares the speed-up the harness measures with
        the speed-up of the same change in the plain loop. Record the change in ``loop.changes``; raise
        TrickSkipped where the trick cannot run on ``loop.accelerator``. Tricks that do not override it
        (the finders, SWA, early stopping) are listed by ``parity`` as having no plain equivalent.
        """

    def conflicts(self, others: Sequence[Trick]) -> list[Conflict]:
        """Refusals and warnings about running this trick together with ``others`` (empty: it runs alone).

        The base refuses two tricks that set the same Trainer argument, since one would silently
        overwrite the other. Subclasses extend the list (``[*super().conflicts(others), ...]``).
        """
        conflicts = []
        for other in others:
            shared = sorted(self.trainer_args & other.trainer_args)
            if shared:
                args = ", ".join(f"{arg}=..." for arg in shared)
                conflicts.append(Conflict("refuse", f"{self.name} and {other.name} both set Trainer({args})"))
        return conflicts

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter names and their defaults."""
        return parameters(cls)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Trick:
        """Build the trick from ``--param NAME.FIELD=VALUE`` strings; UserError on a bad one."""
        return from_params(cls, "trick", cls.name, params)


def check_combination(tricks: Sequence[Trick]) -> list[str]:
    """The warnings of running ``tricks`` together; a UserError if any trick refuses the combination.

    The message names the combination as the CLI spells it and the reason, on one line.
    """
    label = COMBINE.join(trick.name for trick in tricks)
    warnings: list[str] = []
    for index, trick in enumerate(tricks):
        others = [*tricks[:index], *tricks[index + 1 :]]
        for conflict in trick.conflicts(others):
            if conflict.level == "refuse":
                raise UserError(f"cannot run {label!r}: {conflict.reason}")
            if conflict.reason not in warnings:
                warnings.append(conflict.reason)
    return warnings


TRICKS: Registry[type[Trick]] = Registry("trick", "tricks", "harness.tricks")


def register_trick(cls: type[Trick]) -> type[Trick]:
    """Class decorator: register a Trick subclass under its ``name``."""
    if not issubclass(cls, Trick):
        raise TypeError(f"{cls.__qualname__} must subclass harness.trick.Trick")
    return TRICKS.register(cls)
