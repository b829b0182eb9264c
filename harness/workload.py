"""Workloads: a LightningModule plus the data it trains on, registered by name like tricks."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import lightning.pytorch as pl
import torch

from harness.errors import UserError
from harness.params import from_params, parameters
from harness.registry import Registry
from harness.spec import RunSpec
from harness.workloads.imported import PATH_FORM, import_class


class StandaloneSubmodule(NamedTuple):
    """A plain PyTorch part of a trained LightningModule that is useful on its own."""

    name: str  # the attribute, e.g. "encoder"
    module: torch.nn.Module
    # how the LightningModule's forward input becomes this part's input (e.g. flatten the images)
    prepare: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Workload:
    """Base class of workloads. Subclasses build the module; the data defaults to 28x28 digits."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # --max-epochs auto: train on at least this many samples per run (None: AUTO_EPOCHS epochs). A run
    # whose timed training lasts under ~1 s or 10 blocks gives no speed verdict (harness.report.verdicts)
    auto_train_samples: ClassVar[int | None] = None

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """Parameter names and their defaults (sizes of the model, of the synthetic data...)."""
        return parameters(cls)

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Workload:
        """Build the workload from ``--param NAME.FIELD=VALUE`` strings; UserError on a bad one."""
        return from_params(cls, "workload", cls.name, params)

    def dataset_label(self, spec: RunSpec) -> str:
        """What the rows call the data; workloads that bring their own data override it."""
        return spec.dataset

    def train_samples(self, dataset: str, synthetic_size: int) -> int:
        """Training samples per epoch on a resolved ``--dataset``, without loading it (for
        ``--max-epochs auto`` and the time estimate); workloads that bring their own data override it."""
        from harness.workloads.data import train_size

        return train_size(dataset, synthetic_size)

    def build_module(self, spec: RunSpec) -> pl.LightningModule:
        raise NotImplementedError

    def build_datamodule(self, spec: RunSpec) -> pl.LightningDataModule:
        from harness.workloads.data import DigitsDataModule

        return DigitsDataModule.from_spec(spec)

    def plain_loss(self, module: pl.LightningModule, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The training loss of one batch without Lightning, for the plain-PyTorch parity loop."""
        raise NotImplementedError(f"workload {self.name!r} has no plain PyTorch loss for the parity check")

    def checkpoint_blocks(self, module: pl.LightningModule) -> list[tuple[str, torch.nn.Module]]:
        """The blocks whose activations ``activation-checkpointing`` recomputes in backward instead of
        keeping (named, for the row's details); none by default, and the trick is then skipped."""
        return []

    def standalone_submodule(self, module: pl.LightningModule) -> StandaloneSubmodule | None:
        """The part of a trained module that is worth using without Lightning, or None.

        A LightningModule is a plain ``nn.Module`` underneath: after training, Lightning's tutorial
        takes the autoencoder's ``encoder`` and embeds images with it, no Trainer involved.
        ``python -m harness predict`` shows that step for the workloads that name such a part (and
        that it gives the same output as the module's ``forward``); the default names none, and
        ``predict`` then prints nothing extra.
        """
        return None


class ImportedWorkload(Workload):
    """The adapter: ``spec.workload`` and ``spec.datamodule`` are ``pkg.mod:Class`` paths.

    The module is ``cls(**spec.init_args)`` and the datamodule ``dm_cls(**spec.datamodule_args)``;
    their own batch size is kept (the row records what the datamodule uses). There is no plain
    PyTorch loss, so parity refuses these workloads and FLOPs are not counted.
    """

    name = "imported"
    summary = "any importable LightningModule with --datamodule, --init-args, --datamodule-args"

    def dataset_label(self, spec: RunSpec) -> str:
        return spec.datamodule

    def build_module(self, spec: RunSpec) -> pl.LightningModule:
        cls = import_class(spec.workload, "--workload", pl.LightningModule)
        try:
            return cls(**spec.init_args)
        except TypeError as error:
            raise UserError(f"--init-args {json.dumps(spec.init_args)} for {spec.workload}: {error}") from None

    def build_datamodule(self, spec: RunSpec) -> pl.LightningDataModule:
        if not spec.datamodule:
            raise UserError(f"--workload {spec.workload!r} is an imported LightningModule and needs --datamodule {PATH_FORM}")
        cls = import_class(spec.datamodule, "--datamodule", pl.LightningDataModule)
        try:
            return cls(**spec.datamodule_args)
        except TypeError as error:
            raise UserError(f"--datamodule-args {json.dumps(spec.datamodule_args)} for {spec.datamodule}: {error}") from None


class WorkloadRegistry(Registry[type[Workload]]):
    """The registry, plus ``pkg.mod:Class`` names: an imported LightningModule (:class:`ImportedWorkload`)."""

    def get(self, name: str) -> type[Workload]:
        if ":" in name:
            return ImportedWorkload
        return super().get(name)

    def select(self, selection: str) -> list[str]:
        """Registered names and globs as in :meth:`Registry.select`; a ``pkg.mod:Class`` item is
        imported and checked to be a LightningModule (a UserError otherwise) and kept as it is."""
        chosen: list[str] = []
        for item in (part.strip() for part in selection.split(",")):
            if ":" in item:
                import_class(item, "--workload", pl.LightningModule)
                found = [item]
            else:
                found = super().select(item) if item else []
            chosen.extend(name for name in found if name not in chosen)
        return chosen


WORKLOADS: WorkloadRegistry = WorkloadRegistry("workload", "models", "harness.workloads")


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Class decorator: register a Workload subclass under its ``name``."""
    if not issubclass(cls, Workload):
        raise TypeError(f"{cls.__qualname__} must subclass harness.workload.Workload")
    return WORKLOADS.register(cls)
