"""channels-last, tf32, cudnn-benchmark: each takes effect where it can, and is skipped with the reason
where it cannot (a CPU, a module without convolutions), never run as the baseline under its name."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from harness.errors import UserError
from harness.runfolder.plan import check_trick_runs
from harness.worker import execute
from tricks.channels_last import to_channels_last


class ActivationFormat(pl.Callback):
    """Whether the activations entering the module's first multi-channel convolution are NHWC during
    training, and whether its weight is. (digits has one channel, for which NCHW and NHWC are one
    layout: the batch itself cannot show the difference, the activations after the first convolution do.)"""

    def __init__(self) -> None:
        self.activations: list[bool] = []
        self.weight_nhwc: bool | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        conv = next(m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        self.weight_nhwc = nhwc(conv.weight)
        conv.register_forward_hook(lambda module, inputs, output: self.activations.append(nhwc(inputs[0])))


def nhwc(tensor: torch.Tensor) -> bool:
    """Channels innermost (stride 1 on dim 1, more than one channel): channels_last, not NCHW."""
    return tensor.dim() == 4 and tensor.shape[1] > 1 and tensor.stride(1) == 1


def test_channels_last_reaches_the_weights_and_the_activations(make_spec) -> None:
    seen = ActivationFormat()
    result = execute(make_spec(["channels-last"], workload="cnn", max_epochs=1), extra_callbacks=[seen])
    assert result.status == "ok", result.reason
    assert seen.weight_nhwc and seen.activations and all(seen.activations)
    assert result.details["channels_last_tensors_per_batch"] == 1

    baseline = ActivationFormat()
    execute(make_spec(workload="cnn", max_epochs=1), extra_callbacks=[baseline])
    assert not baseline.weight_nhwc and baseline.activations and not any(baseline.activations)  # the check tells them apart


def test_channels_last_is_skipped_for_a_module_without_convolutions(make_spec) -> None:
    result = execute(make_spec(["channels-last"], max_epochs=1))
    assert result.status == "skipped" and "no 2-D convolution" in result.reason


def test_nested_batches_are_converted_and_counted() -> None:
    batch = {"x": torch.zeros(2, 3, 4, 4), "y": [torch.zeros(2), torch.zeros(2, 3, 4, 4)]}
    converted, count = to_channels_last(batch)
    assert count == 2 and converted["x"].is_contiguous(memory_format=torch.channels_last) and converted["y"][0].dim() == 1


@pytest.mark.parametrize(("trick", "words"), [("tf32", "tf32 needs a CUDA GPU"), ("cudnn-benchmark", "cudnn-benchmark needs a CUDA GPU")])
def test_cuda_only_switches_are_skipped_on_a_cpu(trick: str, words: str, make_spec) -> None:
    result = execute(make_spec([trick], max_epochs=1))
    assert result.status == "skipped" and words in result.reason


def test_tf32_on_a_gpu_sets_the_switches_of_this_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path, without a GPU: capability checked, then the switches set (and put back after the test)."""
    from tricks import tf32

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "8.0+" in tf32.tf32_unsupported("gpu")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert tf32.tf32_unsupported("gpu") == ""
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if matmul is None:
        pytest.skip("torch before 2.9: the float32_matmul_precision path")
    conv = torch.backends.cudnn.conv.fp32_precision
    try:
        set_ = tf32.enable_tf32()
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert "fp32_precision" in set_["matmul"]
    finally:
        torch.backends.cuda.matmul.fp32_precision = matmul
        torch.backends.cudnn.conv.fp32_precision = conv


def test_tf32_with_bf16_true_warns_that_it_changes_nothing() -> None:
    warnings = check_trick_runs([["tf32", "bf16-true"]], {})
    assert any("no float32 matmul" in w for w in warnings["tf32+bf16-true"])


def test_cudnn_benchmark_owns_the_benchmark_flag() -> None:
    from tricks.cudnn_benchmark import CudnnBenchmark

    assert CudnnBenchmark.trainer_args == frozenset({"benchmark"})
    with pytest.raises(UserError):
        check_trick_runs([["cudnn-benchmark", "cudnn-benchmark"]], {})
