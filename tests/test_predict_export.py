"""predict and export: a finished run's checkpoint back as a module, its outputs, and checked exports.

One small real run folder (made in-process, module-scoped) serves every test: a baseline whose last
epoch is spoiled (so best.ckpt and last.ckpt hold different weights), an SWA row (final.ckpt), a
bf16-true row (bf16 weights in its checkpoint), a row run with --no-checkpoints and a skipped row.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import lightning.pytorch as pl
import pytest
import torch

from harness.commands import export_cmd, predict_cmd
from harness.errors import UserError
from harness.runfolder.restore import choose_checkpoint, input_batch, restore
from harness.runfolder.rundir import RESULTS, write_plan
from harness.spec import Result
from harness.testing import SpoilLastEpoch, tiny_spec
from harness.worker import execute
from harness.workloads.data import DigitsDataModule


needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in export_cmd.ONNX_PACKAGES),
    reason='the export extra is not installed (pip install -e ".[export]")',
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    specs = [
        tiny_spec(folder, max_epochs=2),
        tiny_spec(folder, ["swa"], max_epochs=2),
        tiny_spec(folder, ["bf16-true"], max_epochs=1),
        tiny_spec(folder, ["grad-clipping"], max_epochs=1, checkpoints=False),
        tiny_spec(folder, ["16-mixed"], max_epochs=1),  # skipped on a CPU
    ]
    write_plan(folder, specs, "test")
    lines = []
    for spec in specs:
        result = execute(spec, extra_callbacks=[SpoilLastEpoch()] if spec.label == "baseline" else ())
        assert result.status == ("skipped" if spec.label == "16-mixed" else "ok"), result.reason
        lines.append(result.to_json())
    (folder / RESULTS).write_text("\n".join(lines) + "\n")
    return folder


def call(command: ModuleType, argv: list[str]) -> int:
    """A subcommand as the CLI calls it: its own arguments parsed, then main."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args(argv))


def held_out_images(run_dir: Path) -> torch.Tensor:
    """The run's test split, in order (what predict_dataloader serves)."""
    data = DigitsDataModule.from_spec(tiny_spec(run_dir))
    data.setup()
    assert data.splits is not None
    return data.splits["test"][0]


def test_predict_saves_one_embedding_per_test_sample(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(predict_cmd, [str(run_dir), "--trick", "baseline"]) == 0
    out = capsys.readouterr().out
    path = run_dir / "predictions" / "autoencoder-cpu-baseline-r0-best.pt"
    assert f"wrote {path}" in out
    predictions = torch.load(path)
    images = held_out_images(run_dir)
    assert predictions.shape == (len(images), 3)
    restored = restore(run_dir, "baseline")
    with torch.no_grad():
        assert torch.allclose(predictions, restored.module(images), atol=1e-6)
    # the encoder used on its own, as in Lightning's tutorial, gives what forward gives
    assert "encoder on its own" in out and "max abs diff vs the LightningModule's forward on the same inputs: 0" in out


def test_the_encoder_alone_gives_the_modules_embeddings(run_dir: Path) -> None:
    restored = restore(run_dir, "baseline")
    part = restored.workload.standalone_submodule(restored.module)
    assert part is not None and part.name == "encoder" and part.module is restored.module.encoder
    assert type(part.module) is not type(restored.module) and not isinstance(part.module, pl.LightningModule)
    x = input_batch(DigitsDataModule.from_spec(tiny_spec(run_dir)), 4)
    assert torch.equal(x, held_out_images(run_dir)[:4])  # real test images, in order
    with torch.no_grad():
        assert torch.equal(part.module(x.view(4, -1)), restored.module(x))


@pytest.mark.parametrize(("trick", "requested", "expected"), [
    ("baseline", None, "best"), ("baseline", "last", "last"), ("swa", None, "final"), ("swa", "best", "best"),
])
def test_the_checkpoint_loaded_holds_its_weights(run_dir: Path, trick: str, requested: str | None, expected: str) -> None:
    restored = restore(run_dir, trick, checkpoint=requested)
    assert restored.checkpoint == expected and restored.path.name == f"{expected}.ckpt"
    stored = torch.load(restored.path, map_location="cpu", weights_only=True)["state_dict"]
    loaded = restored.module.state_dict()
    assert stored.keys() == loaded.keys()
    assert all(torch.equal(stored[key], loaded[key]) for key in stored)
    assert not restored.module.training
    if trick == "baseline":  # the spoiled last epoch makes best and last differ: the load is not a coincidence
        other = torch.load(restored.path.with_name("last.ckpt" if expected == "best" else "best.ckpt"), weights_only=True)["state_dict"]
        assert not all(torch.equal(other[key], loaded[key]) for key in stored)


@needs_onnx
def test_export_onnx_matches_pytorch_at_another_batch_size(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime

    assert call(export_cmd, [str(run_dir), "--trick", "baseline", "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    path = run_dir / "exports" / "autoencoder-cpu-baseline-r0-best.onnx"
    assert path.is_file() and "dynamic batch axis" in out and ": ok" in out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic batch axis
    x = held_out_images(run_dir)[:7]  # the export sample had 2
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = restore(run_dir, "baseline").module(x)
    assert got.shape == (7, 3)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_export_torchscript_matches_pytorch_at_another_batch_size(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert call(export_cmd, [str(run_dir), "--trick", "swa", "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    path = run_dir / "exports" / "autoencoder-cpu-swa-r0-final.pt"
    assert path.is_file() and "method='script'" in out and ": ok" in out
    loaded = torch.jit.load(str(path))
    x = held_out_images(run_dir)[:7]
    with torch.no_grad():
        assert torch.allclose(loaded(x), restore(run_dir, "swa").module(x), atol=1e-4)


def test_a_bf16_true_checkpoint_exports_in_float32(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    restored = restore(run_dir, "bf16-true")
    assert restored.stored_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in restored.module.parameters())
    assert call(export_cmd, [str(run_dir), "--trick", "bf16-true", "--format", "torchscript"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16 weights: cast to float32" in out and "exported in float32" in out and ": ok" in out


def test_without_best_the_default_is_last_with_a_note() -> None:
    row = Result(run_id="r", trick="baseline", workload="autoencoder", dataset="digits", accelerator="cpu", repeat=0,
                 status="ok", checkpoints={"last": "checkpoints/r/last.ckpt"})
    name, notes = choose_checkpoint(row)
    assert name == "last" and "no best.ckpt" in notes[0]


def test_bad_names_are_user_errors_naming_the_choices(run_dir: Path) -> None:
    with pytest.raises(UserError, match="unknown trick 'basline'; did you mean baseline"):
        call(predict_cmd, [str(run_dir), "--trick", "basline"])
    with pytest.raises(UserError, match=r"unknown checkpoint 'bset'.*has: best, last"):
        call(predict_cmd, [str(run_dir), "--trick", "baseline", "--checkpoint", "bset"])
    with pytest.raises(UserError, match="has no final.ckpt; it has: best, last"):
        call(export_cmd, [str(run_dir), "--trick", "baseline", "--checkpoint", "final", "--format", "torchscript"])
    with pytest.raises(UserError, match="unknown export format 'tflite'; valid choices: onnx, torchscript"):
        call(export_cmd, [str(run_dir), "--trick", "baseline", "--format", "tflite"])
    with pytest.raises(UserError, match=r"is skipped \(.*\): it has no trained weights"):
        call(predict_cmd, [str(run_dir), "--trick", "16-mixed"])
    with pytest.raises(UserError, match=r"kept no checkpoints \(it ran with --no-checkpoints\)"):
        call(predict_cmd, [str(run_dir), "--trick", "grad-clipping"])


def test_onnx_without_the_extra_names_it(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(UserError, match=r'needs onnxruntime .*pip install -e "\.\[export\]"'):
        call(export_cmd, [str(run_dir), "--trick", "baseline", "--format", "onnx"])


def test_a_difference_above_atol_exits_1(run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = export_cmd.run_torchscript
    monkeypatch.setattr(export_cmd, "run_torchscript", lambda path, inputs: [t + 1e-3 for t in real(path, inputs)])
    out_file = run_dir / "exports" / "spoiled.pt"
    assert call(export_cmd, [str(run_dir), "--trick", "baseline", "--format", "torchscript", "--out", str(out_file)]) == 1
    captured = capsys.readouterr()
    assert ": FAIL" in captured.out and "above --atol 0.0001" in captured.err
