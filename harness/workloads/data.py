"""Datasets of 28x28 digit images, and the datamodule that serves them.

Three sources, one shape (N, 1, 28, 28) float32 in [0, 1] with int64 labels:
- ``mnist``: torchvision's MNIST from ``data_dir``, downloaded when missing and the network allows;
  the train split is divided 80/20 into train/val with a seeded generator, as Lightning's tutorial
  does; the t10k split is the test set.
- ``digits``: scikit-learn's 8x8 handwritten digits (shipped with the package, so always offline),
  resized to 28x28; 20% held out as the test set, the rest split 80/20.
- ``synthetic``: seeded uniform noise of any size, for pure speed runs.
``auto`` picks MNIST when it is on disk or can be downloaded, else ``digits``, and says why.

Measuring protocol: when the dataset fits, batches are sliced from tensors already on the
accelerator and shuffled with a seeded device ``randperm``, so that a run measures the model and the
trick, not the input pipeline. ``loader="dataloader"`` keeps the plain torch DataLoader path for
when the input pipeline is what you want to measure.
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import UserError, first_line
from harness.spec import RunSpec

DATASETS = ("auto", "mnist", "digits", "synthetic")
LOADERS = ("device", "dataloader")
DOWNLOAD_TIMEOUT_S = 15.0
# Share of the accelerator's free memory the whole dataset may take before we fall back to a DataLoader.
DEVICE_DATA_BUDGET = 0.25

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetChoice:
    name: str
    reason: str


def load_mnist(data_dir: str | Path, download: bool = False) -> dict[str, Split]:
    """MNIST as tensors: train/val (seeded 80/20 of the train split, seed applied later) and test."""
    from torchvision.datasets import MNIST

    train = MNIST(str(data_dir), train=True, download=download)
    test = MNIST(str(data_dir), train=False, download=download)
    return {
        "trainval": (_to_float_images(train.data), train.targets.long()),
        "test": (_to_float_images(test.data), test.targets.long()),
    }


def _to_float_images(data: torch.Tensor) -> torch.Tensor:
    return (data.float() / 255.0).unsqueeze(1).contiguous()


def mnist_on_disk(data_dir: str | Path) -> bool:
    try:
        load_mnist(data_dir, download=False)
    except RuntimeError:
        return False
    return True


def download_mnist(data_dir: str | Path) -> None:
    """torchvision's own download, with a socket timeout so an offline machine fails fast.

    torchvision prints each mirror it tries; that goes nowhere, and the error that matters is raised.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            load_mnist(data_dir, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def load_digits_28() -> dict[str, Split]:
    """scikit-learn's 1,797 8x8 digits, bilinearly resized to 28x28 and scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return {"all": (images.clamp_(0.0, 1.0).contiguous(), torch.tensor(bunch.target, dtype=torch.long))}


def synthetic_digits(size: int, seed: int) -> dict[str, Split]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (size,), generator=generator)
    return {"all": (images, labels)}


def resolve_dataset(requested: str, data_dir: str | Path) -> DatasetChoice:
    """Decide, once in the parent, which dataset every run uses, and why.

    An explicit ``mnist`` that is neither on disk nor downloadable is a user error (the fix is to
    put the files in ``--data-dir`` or pick ``digits``); ``auto`` falls back to ``digits`` instead.
    """
    if requested not in DATASETS:
        raise UserError(f"unknown dataset {requested!r}; valid choices: {', '.join(DATASETS)}")
    if requested in ("digits", "synthetic"):
        return DatasetChoice(requested, f"{requested} requested")
    if mnist_on_disk(data_dir):
        return DatasetChoice("mnist", f"MNIST found in {data_dir}")
    try:
        download_mnist(data_dir)
    except Exception as error:  # any network or mirror failure
        why = f"MNIST is not in {data_dir} and the download failed ({type(error).__name__}: {first_line(error).rstrip(':')})"
        if requested == "mnist":
            raise UserError(f"{why}; put the MNIST files in --data-dir or use --dataset digits") from None
        return DatasetChoice("digits", f"{why}; using scikit-learn's digits instead")
    return DatasetChoice("mnist", f"MNIST downloaded to {data_dir}")


def seeded_split(split: Split, sizes: list[int], seed: int) -> list[Split]:
    """Split tensors by a seeded permutation, like ``torch.utils.data.random_split``."""
    x, y = split
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        index = order[start : start + size]
        parts.append((x[index].contiguous(), y[index].contiguous()))
        start += size
    return parts


DIGITS_SAMPLES, MNIST_TRAINVAL = 1797, 60000


def train_size(dataset: str, synthetic_size: int) -> int:
    """Training samples of a resolved dataset, by the split rule of :func:`load_splits`, without loading it."""
    if dataset == "mnist":
        return int(MNIST_TRAINVAL * 0.8)
    n = DIGITS_SAMPLES if dataset == "digits" else synthetic_size
    return int((n - n // 5) * 0.8)


def load_splits(dataset: str, data_dir: str | Path, seed: int, synthetic_size: int) -> dict[str, Split]:
    """train/val/test tensors on the CPU for a resolved dataset name."""
    if dataset == "mnist":
        raw = load_mnist(data_dir)
        trainval = raw["trainval"]
        n_train = int(len(trainval[0]) * 0.8)
        train, val = seeded_split(trainval, [n_train, len(trainval[0]) - n_train], seed)
        return {"train": train, "val": val, "test": raw["test"]}
    if dataset == "digits":
        raw = load_digits_28()["all"]
    elif dataset == "synthetic":
        raw = synthetic_digits(synthetic_size, seed)["all"]
    else:
        raise UserError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS[1:])}")
    n = len(raw[0])
    n_test = n // 5
    n_train = int((n - n_test) * 0.8)
    train, val, test = seeded_split(raw, [n_train, n - n_test - n_train, n_test], seed)
    return {"train": train, "val": val, "test": test}


class TensorBatches:
    """Batches sliced from tensors that already sit on the training device.

    Shuffling uses a ``randperm`` on the tensors' device with a generator seeded by
    ``seed + epoch``: every run sees the same batches in the same order, and no host round-trip
    happens per step. ``len`` gives Lightning the number of batches per epoch. The epoch comes from
    ``epoch_of`` (the datamodule passes the trainer's ``current_epoch``, so the order survives a
    resume from a checkpoint), else from a count of the iterations.

    Under a distributed strategy each rank takes every ``world_size``-th sample of the (shuffled)
    order, the set padded by repeating its first samples so that every rank runs the same number of
    batches, as torch's DistributedSampler does (a rank with one batch fewer would hang the others).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch_of = epoch_of
        self._iterations = 0

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(len(self.x) / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self.samples_per_rank / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        """The sample indices of this rank for this epoch; None for the whole set in order."""
        n = len(self.x)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            epoch = self.epoch_of() if self.epoch_of is not None else self._iterations
            generator = torch.Generator(device=self.x.device).manual_seed(self.seed + epoch)
            order = torch.randperm(n, device=self.x.device, generator=generator)
        else:
            order = torch.arange(n, device=self.x.device)
        if self.world_size > 1:
            total = self.samples_per_rank * self.world_size
            order = torch.cat([order, order[: total - n]])[self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        self._iterations += 1
        size = self.batch_size
        if order is None:
            for start in range(0, len(self.x), size):
                yield self.x[start : start + size], self.y[start : start + size]
            return
        for start in range(0, len(order), size):
            index = order[start : start + size]
            yield self.x[index], self.y[index]


class TensorDataModule(pl.LightningDataModule):
    """A datamodule over in-memory (input, target) tensors split into train/val/test.

    Subclasses implement ``load_splits``. ``batch_size`` is a plain attribute that every
    ``*_dataloader`` call reads, so Lightning's batch size finder can scale it. With
    ``loader="device"`` the tensors move to the training device once, in ``setup``.
    """

    def __init__(self, batch_size: int = 64, loader: str = "device", seed: int = 42, num_workers: int = 0) -> None:
        super().__init__()
        if loader not in LOADERS:
            raise UserError(f"unknown loader {loader!r}; valid choices: {', '.join(LOADERS)}")
        self.batch_size = batch_size
        self.loader = loader
        self.seed = seed
        self.num_workers = num_workers
        self.loader_used = loader
        self.loader_reason = ""
        self.device: torch.device | None = None  # where to put the tensors when no Trainer is attached
        self.splits: dict[str, Split] | None = None

    def load_splits(self) -> dict[str, Split]:
        """train/val/test tensors on the CPU."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load_splits()
        if self.loader == "device":
            device = self._target_device()
            fits, why = dataset_fits(splits, device)
            if fits:
                splits = {name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()}
            else:
                self.loader_used, self.loader_reason = "dataloader", why
        self.splits = splits

    def _target_device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return self.device or torch.device("cpu")

    def _batches(self, split: str, shuffle: bool) -> TensorBatches | DataLoader:
        assert self.splits is not None, "setup() must run first"
        x, y = self.splits[split]
        if self.loader_used == "device":
            trainer = self.trainer
            if trainer is None:
                return TensorBatches(x, y, self.batch_size, shuffle=shuffle, seed=self.seed)
            return TensorBatches(
                x, y, self.batch_size, shuffle=shuffle, seed=self.seed,
                rank=trainer.global_rank, world_size=trainer.world_size, epoch_of=lambda: trainer.current_epoch,
            )
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            TensorDataset(x, y),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self._target_device().type == "cuda",
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> TensorBatches | DataLoader:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches | DataLoader:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches | DataLoader:
        return self._batches("test", shuffle=False)

    def predict_dataloader(self) -> TensorBatches | DataLoader:
        return self._batches("test", shuffle=False)


class DigitsDataModule(TensorDataModule):
    """28x28 digit images (MNIST, scikit-learn's digits or synthetic) with integer labels."""

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str = "./data",
        batch_size: int = 64,
        loader: str = "device",
        seed: int = 42,
        synthetic_size: int = 8192,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, loader=loader, seed=seed, num_workers=num_workers)
        self.dataset = dataset
        self.data_dir = data_dir
        self.synthetic_size = synthetic_size

    @classmethod
    def from_spec(cls, spec: RunSpec) -> DigitsDataModule:
        return cls(
            dataset=spec.dataset,
            data_dir=spec.data_dir,
            batch_size=spec.batch_size,
            loader=spec.loader,
            seed=spec.seed,
            synthetic_size=spec.synthetic_size,
            num_workers=spec.num_workers,
        )

    def load_splits(self) -> dict[str, Split]:
        return load_splits(self.dataset, self.data_dir, self.seed, self.synthetic_size)


def dataset_fits(splits: dict[str, Split], device: torch.device) -> tuple[bool, str]:
    """Whether all splits fit in the device's memory budget; the reason when they do not."""
    if device.type != "cuda":
        return True, ""
    needed = sum(x.nbytes + y.nbytes for x, y in splits.values())
    free, _ = torch.cuda.mem_get_info(device)
    if needed <= DEVICE_DATA_BUDGET * free:
        return True, ""
    return False, (
        f"dataset needs {needed / 2**30:.2f} GiB, over {DEVICE_DATA_BUDGET:.0%} of the "
        f"{free / 2**30:.2f} GiB free on {device}: served by a DataLoader instead"
    )
