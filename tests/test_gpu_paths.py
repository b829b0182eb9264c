"""The GPU code paths, exercised on a CPU-only machine as far as that allows.

torch.cuda's answers are faked where the harness asks them (is a device there, how much memory is
free, what was the peak), so that the decisions taken on them are tested here; the numbers
themselves can only come from a real GPU run (reports/ holds one when a GPU was lent).
"""

from __future__ import annotations

import pytest
import torch

from harness.commands.options import resolve_accelerators
from harness.errors import UserError
from harness.measuring import measure
from harness.measuring.flops import dense_peak, math_mode, utilisation
from harness.workloads.data import dataset_fits


def test_auto_picks_the_gpu_when_one_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_accelerators("auto") == ["gpu"]
    assert resolve_accelerators("cpu,gpu") == ["cpu", "gpu"]
    assert resolve_accelerators("gpu,auto") == ["gpu"]


def test_without_a_gpu_auto_says_it_runs_on_cpu_and_gpu_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_accelerators("auto") == ["cpu"]
    assert "no CUDA device visible, running on CPU" in capsys.readouterr().err
    with pytest.raises(UserError, match="no CUDA device is visible"):
        resolve_accelerators("cpu,gpu")


def test_block_edges_synchronise_cuda_and_peak_memory_is_cudas(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123_456_789)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    cuda = torch.device("cuda", 0)
    timer = measure.BlockTimer(cuda, block_steps=2, warmup_blocks=0)
    for _ in range(4):
        timer.resume()
        timer.add_batch(8, None)
    assert calls.count("sync") == 1 + 2 * 2  # the first resume, then pause and resume at each of 2 edges
    measure.reset_peak_memory(cuda)
    assert measure.peak_memory(cuda) == (123_456_789, "cuda_max_allocated") and "reset" in calls


def test_data_stays_on_the_gpu_only_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    splits = {"train": (torch.zeros(1000, 1, 28, 28), torch.zeros(1000, dtype=torch.long))}
    needed = sum(x.nbytes + y.nbytes for x, y in splits.values())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * needed, 200 * needed))
    assert dataset_fits(splits, torch.device("cuda", 0)) == (True, "")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * needed, 200 * needed))
    fits, why = dataset_fits(splits, torch.device("cuda", 0))
    assert not fits and "served by a DataLoader" in why


def test_mfu_uses_dense_peaks_not_lightnings_sparse_h200_figure() -> None:
    peak, text = dense_peak("NVIDIA H200", "bf16-mixed")
    assert peak == pytest.approx(989.4e12) and "dense" in text
    assert dense_peak("NVIDIA H100 PCIe", "bf16-mixed")[0] == pytest.approx(756e12)
    assert dense_peak("NVIDIA H100 80GB HBM3", "16-mixed")[0] == pytest.approx(989.4e12)
    assert dense_peak("Tesla T4", "bf16-mixed")[0] is None
    usage = utilisation(flops_per_batch=1e12, samples_per_s=1000.0, batch_size=100, accelerator="gpu",
                        device_name="NVIDIA H200", precision="bf16-mixed")
    assert usage.achieved_flops == pytest.approx(1e13) and usage.mfu == pytest.approx(1e13 / 989.4e12)
    cpu = utilisation(1e9, 1000.0, 100, "cpu", "AMD EPYC", "32-true")
    assert cpu.mfu is None and cpu.achieved_flops == pytest.approx(1e10)


def test_fp32_peak_follows_the_matmul_precision_setting() -> None:
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert math_mode("32-true") == "fp32"
        torch.set_float32_matmul_precision("high")
        assert math_mode("32-true") == "tf32"
    finally:
        torch.set_float32_matmul_precision(previous)
    assert math_mode("bf16-true") == "bf16" and math_mode("16-mixed") == "fp16"


def test_flops_are_counted_for_a_bfloat16_batch() -> None:
    """bf16-true hands the module bfloat16 inputs; the FLOP count must not depend on it."""
    from harness.measuring.flops import training_flops_per_batch
    from models.cnn import LitDigitCNN

    loss = lambda module, batch: module.classification_loss(batch)  # noqa: E731
    labels = torch.zeros(4, dtype=torch.long)
    fp32 = training_flops_per_batch(LitDigitCNN, loss, (torch.zeros(4, 1, 28, 28), labels))
    bf16 = training_flops_per_batch(LitDigitCNN, loss, (torch.zeros(4, 1, 28, 28, dtype=torch.bfloat16), labels))
    assert fp32 == bf16 > 0
