"""Datasets and batches: MNIST from IDX files the test writes (and 'downloads' from a local mirror),
scikit-learn's digits, synthetic data, seeded splits and on-device batches."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from harness.errors import UserError
from harness.workloads import data
from harness.workloads.data import DigitsDataModule, TensorBatches, load_splits, resolve_dataset

FILES = {
    "train-images-idx3-ubyte": (True, 50),
    "train-labels-idx1-ubyte": (False, 50),
    "t10k-images-idx3-ubyte": (True, 20),
    "t10k-labels-idx1-ubyte": (False, 20),
}


def idx_bytes(images: bool, count: int, seed: int) -> bytes:
    """The IDX format MNIST ships in: a magic number, big-endian dimensions, then uint8 data."""
    rng = np.random.default_rng(seed)
    if images:
        payload = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        return struct.pack(">IIII", 0x0803, count, 28, 28) + payload.tobytes()
    payload = rng.integers(0, 10, size=count, dtype=np.uint8)
    return struct.pack(">II", 0x0801, count) + payload.tobytes()


def write_mnist_raw(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for seed, (name, (images, count)) in enumerate(FILES.items()):
        (raw / name).write_bytes(idx_bytes(images, count, seed))


def test_mnist_is_read_from_idx_files_on_disk(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path)
    assert data.mnist_on_disk(tmp_path)
    expected = np.frombuffer(idx_bytes(True, 50, 0)[16:], dtype=np.uint8).reshape(50, 28, 28)
    splits = load_splits("mnist", tmp_path, seed=42, synthetic_size=0)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [40, 10, 20]  # 80/20 of train; t10k is test
    x, y = splits["test"]
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = data.load_mnist(tmp_path)["trainval"][0]
    assert torch.allclose(raw[:, 0], torch.tensor(expected, dtype=torch.float32) / 255)
    assert resolve_dataset("auto", tmp_path).name == "mnist"


@pytest.fixture
def local_mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server on the loopback interface serving a folder; stopped after the test."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_mnist_download_code_fetches_from_a_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_mirror: tuple[Path, str]
) -> None:
    """torchvision's real download path, pointed at a loopback mirror of gzipped IDX files."""
    mirror, url = local_mirror
    resources = []
    for seed, (name, (images, count)) in enumerate(FILES.items()):
        gz = mirror / f"{name}.gz"
        gz.write_bytes(gzip.compress(idx_bytes(images, count, seed)))
        resources.append((gz.name, hashlib.md5(gz.read_bytes()).hexdigest()))
    monkeypatch.setattr(MNIST, "mirrors", [url])
    monkeypatch.setattr(MNIST, "resources", resources)
    target = tmp_path / "data"
    choice = resolve_dataset("auto", target)
    assert choice.name == "mnist" and "downloaded" in choice.reason
    assert data.mnist_on_disk(target)


def test_auto_falls_back_to_digits_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(data_dir: Path) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried somewhere")

    monkeypatch.setattr(data, "download_mnist", offline)
    choice = resolve_dataset("auto", tmp_path)
    assert choice.name == "digits"
    assert "download failed" in choice.reason and "digits" in choice.reason and "\n" not in choice.reason
    with pytest.raises(UserError, match="--dataset digits"):
        resolve_dataset("mnist", tmp_path)
    with pytest.raises(UserError, match="valid choices"):
        resolve_dataset("cifar", tmp_path)


def test_digits_are_real_28x28_images_split_three_ways() -> None:
    splits = load_splits("digits", "unused", seed=42, synthetic_size=0)
    sizes = [len(splits[s][0]) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and sizes == [1150, 288, 359]
    x, y = splits["train"]
    assert x.shape[1:] == (1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert set(y.tolist()) == set(range(10))
    assert x.std() > 0.1  # digits, not a blank canvas


def test_splits_and_synthetic_data_are_deterministic_per_seed() -> None:
    a = load_splits("synthetic", "unused", seed=1, synthetic_size=100)
    b = load_splits("synthetic", "unused", seed=1, synthetic_size=100)
    c = load_splits("synthetic", "unused", seed=2, synthetic_size=100)
    assert torch.equal(a["train"][0], b["train"][0])
    assert not torch.equal(a["train"][0], c["train"][0])


def test_tensor_batches_cover_every_sample_once_per_epoch_in_a_seeded_order() -> None:
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    epoch1 = torch.cat([b[1] for b in batches])
    epoch2 = torch.cat([b[1] for b in batches])
    assert sorted(epoch1.tolist()) == list(range(10)) == sorted(epoch2.tolist())
    assert not torch.equal(epoch1, epoch2)  # reshuffled each epoch
    again = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert torch.equal(torch.cat([b[1] for b in again]), epoch1)  # same seed, same order
    ordered = torch.cat([b[1] for b in TensorBatches(x, y, 4, shuffle=False, seed=0)])
    assert torch.equal(ordered, y)


def test_datamodule_serves_device_batches_or_a_dataloader() -> None:
    module = DigitsDataModule(dataset="digits", batch_size=32, loader="device")
    module.setup("fit")
    assert isinstance(module.train_dataloader(), TensorBatches)
    module.batch_size = 16  # what the batch size finder does
    assert next(iter(module.train_dataloader()))[0].shape[0] == 16
    loader = DigitsDataModule(dataset="digits", batch_size=32, loader="dataloader")
    loader.setup("fit")
    assert isinstance(loader.train_dataloader(), torch.utils.data.DataLoader)
    with pytest.raises(UserError, match="valid choices: device, dataloader"):
        DigitsDataModule(loader="ffcv")
