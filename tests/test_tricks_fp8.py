"""fp8 (torchao float8 training): the eligible nn.Linear layers become Float8Linear and their float8
matmuls run, the others are left with the reason; every skip reason (no CUDA GPU, compute capability
below 8.9, torchao absent, no eligible Linear) is tested. No GPU is needed: the conversion itself runs
on a CPU, and the hardware check is bypassed by calling the conversion directly or faking the GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from harness.errors import TrickSkipped
from harness.runfolder.plan import check_trick_runs
from harness.testing import tiny_spec
from harness.trick import Setup
from harness.worker import execute
from harness.workload import WORKLOADS
from tricks import fp8


def workload_module(tmp_path: Path, workload: str, **params: str) -> torch.nn.Module:
    spec = tiny_spec(tmp_path, [], workload=workload)
    return WORKLOADS.get(workload).from_params(params).build_module(spec)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def hide_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if torchao were not installed: ``import torchao.float8`` raises ImportError."""
    for name in [name for name in sys.modules if name == "torchao" or name.startswith("torchao.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchao", None)


def test_fp8_is_skipped_on_a_cpu_with_the_reason(make_spec) -> None:
    result = execute(make_spec(["fp8"], max_epochs=1))
    assert result.status == "skipped" and "fp8 needs a CUDA GPU" in result.reason
    assert result.steps is None


def test_fp8_needs_compute_capability_8_9(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "CUDA GPU" in fp8.fp8_unsupported("cpu")
    fake_gpu(monkeypatch, (8, 0))  # an A100: bf16 and TF32 tensor cores, no float8
    assert "8.9+" in fp8.fp8_unsupported("gpu") and "8.0" in fp8.fp8_unsupported("gpu")
    fake_gpu(monkeypatch, (8, 9))  # Ada (L4, L40S, RTX 4090)
    assert fp8.fp8_unsupported("gpu") == ""
    fake_gpu(monkeypatch, (9, 0))  # H100 / H200
    assert fp8.fp8_unsupported("gpu") == ""


def test_fp8_without_torchao_is_skipped_with_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_gpu(monkeypatch, (9, 0))
    hide_torchao(monkeypatch)
    spec = tiny_spec(tmp_path, ["fp8"], accelerator="gpu")
    setup = Setup(spec=spec, module=workload_module(tmp_path, "autoencoder"), datamodule=None, trainer_kwargs={})  # type: ignore[arg-type]
    with pytest.raises(TrickSkipped, match=r"needs torchao: pip install -e '\.\[fp8\]'"):
        fp8.Fp8().apply(setup)
    assert not any(type(layer).__name__ == "Float8Linear" for layer in setup.module.modules())


def test_fp8_skips_a_module_with_no_eligible_linear_and_names_its_layers(tmp_path: Path) -> None:
    module = workload_module(tmp_path, "transformer", d_model="24", heads="4")  # 24 -> 96 -> 24: not divisible by 16
    with pytest.raises(TrickSkipped, match="no nn.Linear of the module can run in float8") as skipped:
        fp8.convert_linears(module, "tensorwise")
    assert "linear1 (24->96: dims not divisible by 16)" in str(skipped.value)
    assert "out_proj (nn.MultiheadAttention's out_proj" in str(skipped.value)
    with pytest.raises(TrickSkipped, match="has no nn.Linear"):
        fp8.convert_linears(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU()), "tensorwise")


@pytest.mark.parametrize(
    ("workload", "converted", "left"),
    [
        ("autoencoder", ["encoder.l1.0", "decoder.l1.2"], {"encoder.l1.2": "64->3", "decoder.l1.0": "3->64"}),
        ("cnn", ["net.classifier.1"], {"net.classifier.4": "128->10"}),
        (
            "transformer",
            [f"model.blocks.layers.{i}.{name}" for i in (0, 1) for name in ("linear1", "linear2")],
            {f"model.blocks.layers.{i}.self_attn.out_proj": "MultiheadAttention" for i in (0, 1)},
        ),
    ],
)
def test_fp8_swaps_the_eligible_linears_for_float8linear(workload: str, converted: list[str], left: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("torchao.float8")
    from torchao.float8.float8_linear import Float8Linear

    module = workload_module(tmp_path, workload)
    details = fp8.convert_linears(module, "tensorwise")
    layers = dict(module.named_modules())
    assert all(isinstance(layers[name], Float8Linear) for name in converted)
    assert not any(isinstance(layers[name], Float8Linear) for name in left) and all(isinstance(layers[name], nn.Linear) for name in left)
    assert details["fp8_converted"] == converted and details["fp8_converted_count"] == len(converted)
    assert set(details["fp8_skipped"]) == set(left)
    assert all(words in details["fp8_skipped"][name] for name, words in left.items())
    assert details["fp8_recipe"] == "tensorwise" and details["torchao_version"][0].isdigit()


def test_fp8_layers_run_float8_matmuls_in_forward_and_backward(tmp_path: Path) -> None:
    """The converted autoencoder trains through its Float8Linear layers (torch's float8 matmul runs on
    this CPU, slowly): their forward is called, and the output carries float8's rounding error."""
    pytest.importorskip("torchao.float8")
    reference = workload_module(tmp_path, "autoencoder")
    module = workload_module(tmp_path, "autoencoder")
    module.load_state_dict(reference.state_dict())
    fp8.convert_linears(module, "tensorwise")
    calls: list[str] = []
    for name, layer in module.named_modules():
        if type(layer).__name__ == "Float8Linear":
            layer.register_forward_hook(lambda *args, name=name: calls.append(name))
    images = torch.rand(32, 784)
    out = module.decoder(module.encoder(images))
    out.square().mean().backward()
    assert calls == ["encoder.l1.0", "decoder.l1.2"]
    assert module.encoder.l1[0].weight.grad is not None and module.encoder.l1[0].weight.dtype == torch.float32
    expected = reference.decoder(reference.encoder(images))
    assert not torch.equal(out, expected)  # float8 (e4m3: 3 mantissa bits) rounds the matmul operands...
    assert torch.allclose(out, expected, rtol=0.2, atol=0.05)  # ...and computes the same function


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise", "rowwise_with_gw_hp"])
def test_fp8_recipes_are_torchao_s(recipe: str, tmp_path: Path) -> None:
    float8 = pytest.importorskip("torchao.float8")
    assert recipe in {name.value for name in float8.Float8LinearRecipeName}
    module = workload_module(tmp_path, "cnn")
    assert fp8.convert_linears(module, recipe)["fp8_recipe"] == recipe
    layer = module.net.classifier[1]
    granularity = "AXISWISE" if recipe.startswith("rowwise") else "TENSORWISE"
    assert layer.config.cast_config_input.scaling_granularity.name == granularity


def test_fp8_apply_on_a_float8_gpu_converts_and_records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torchao.float8")
    fake_gpu(monkeypatch, (9, 0))
    spec = tiny_spec(tmp_path, ["fp8"], accelerator="gpu", trick_params={"fp8": {"recipe": "rowwise"}})
    setup = Setup(spec=spec, module=workload_module(tmp_path, "cnn"), datamodule=None, trainer_kwargs={})  # type: ignore[arg-type]
    fp8.Fp8.from_params({"recipe": "rowwise"}).apply(setup)
    assert setup.details["fp8_recipe"] == "rowwise" and setup.details["fp8_converted"] == ["net.classifier.1"]
    assert set(setup.details) >= {"torchao_version", "fp8_converted_count", "fp8_skipped"}


def test_fp8_combinations_bf16_and_compile_run_16_mixed_warns() -> None:
    warnings = check_trick_runs([["fp8", "bf16-mixed"], ["fp8", "bf16-true"], ["fp8", "compile"], ["fp8", "16-mixed"]], {})
    assert not warnings.get("fp8+bf16-mixed") and not warnings.get("fp8+bf16-true") and not warnings.get("fp8+compile")
    assert any("bfloat16" in warning for warning in warnings["fp8+16-mixed"])


def test_fp8_with_a_torchao_that_does_not_import_is_skipped_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torchao made for another torch can fail on import with something other than ImportError."""
    import importlib

    def broken(name: str):
        raise AttributeError("module 'torch' has no attribute 'float4_e2m1fn_x2'")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(TrickSkipped, match=r"torchao does not import with torch .*AttributeError"):
        fp8.load_torchao()


def test_fp8_rowwise_in_float32_warns_that_only_sm90_has_that_matmul() -> None:
    rowwise = {"fp8": {"recipe": "rowwise"}}
    assert any("compute capability 9.0" in warning for warning in check_trick_runs([["fp8"]], rowwise)["fp8"])
    assert not check_trick_runs([["fp8", "bf16-mixed"], ["fp8"]], {})  # bf16 outputs, or the tensorwise default


class Float8Calls(pl.Callback):
    """How many Float8Linear forwards ran inside training steps, and the layers' class during fit."""

    def __init__(self) -> None:
        self.calls = 0
        self.layers: list[str] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for name, layer in pl_module.named_modules():
            if type(layer).__name__ == "Float8Linear":
                self.layers.append(name)
                layer.register_forward_hook(self.count)

    def count(self, *args: object) -> None:
        self.calls += 1


def test_fp8_row_trains_through_float8linear_when_the_hardware_check_passes(monkeypatch: pytest.MonkeyPatch, make_spec) -> None:
    """The whole run (fit, validation, checkpoint, test) with the converted module, on this CPU: the
    hardware check is bypassed, so this is the trick's plumbing through Lightning, not its speed."""
    pytest.importorskip("torchao.float8")
    monkeypatch.setattr(fp8, "fp8_unsupported", lambda accelerator: "")
    seen = Float8Calls()
    result = execute(make_spec(["fp8"], max_epochs=1), extra_callbacks=[seen])
    assert result.status == "ok", result.reason
    assert seen.layers == ["encoder.l1.0", "decoder.l1.2"] and seen.calls >= 2 * result.steps
    assert result.details["fp8_converted"] == seen.layers and result.details["fp8_recipe"] == "tensorwise"
    assert result.val_loss is not None and result.test_loss is not None
