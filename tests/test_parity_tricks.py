"""Per-trick parity: the plain loop really does each trick's plain PyTorch form, and parity reports it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import harness.commands.parity_cmd as parity_cmd
from harness.cli import main as cli_main
from harness.errors import TrickSkipped
from harness.parity import NoPlainEquivalent, execute_plain, has_plain_equivalent, plain_loop_for
from harness.runfolder.plan import RunOptions
from harness.spec import RunSpec
from harness.trick import TRICKS
from harness.worker import execute
from models.autoencoder import AutoencoderWorkload


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the plain loop's loss computation saw at each step: autocast, weight and input dtypes."""
    records: list[dict[str, Any]] = []
    original = AutoencoderWorkload.plain_loss

    def recording(self: AutoencoderWorkload, module: Any, batch: Any) -> torch.Tensor:
        records.append(
            {
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
                "param_dtype": next(module.parameters()).dtype,
                "input_dtype": batch[0].dtype,
                "batch": batch[0].shape[0],
            }
        )
        return original(self, module, batch)

    monkeypatch.setattr(AutoencoderWorkload, "plain_loss", recording)
    return records


def test_bf16_mixed_runs_the_plain_loss_under_bfloat16_autocast(make_spec: Callable[..., RunSpec], seen: list[dict[str, Any]]) -> None:
    result = execute_plain(make_spec(["bf16-mixed"], max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.precision == "bf16-mixed"
    assert seen and all(s["autocast"] and s["autocast_dtype"] == torch.bfloat16 for s in seen)
    assert all(s["param_dtype"] == torch.float32 for s in seen)  # mixed: the weights stay float32


def test_bf16_true_casts_the_weights_and_the_inputs(make_spec: Callable[..., RunSpec], seen: list[dict[str, Any]]) -> None:
    result = execute_plain(make_spec(["bf16-true"], max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.precision == "bf16-true"
    assert all(s["param_dtype"] == torch.bfloat16 and s["input_dtype"] == torch.bfloat16 and not s["autocast"] for s in seen)


def test_the_baseline_is_plain_float32(make_spec: Callable[..., RunSpec], seen: list[dict[str, Any]]) -> None:
    result = execute_plain(make_spec(max_epochs=1))
    assert result.status == "ok" and result.precision == "32-true"
    assert all(not s["autocast"] and s["param_dtype"] == torch.float32 for s in seen)


def test_grad_clipping_clips_before_every_step(make_spec: Callable[..., RunSpec], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def counting(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(max_norm)
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    spec = make_spec(["grad-clipping"], trick_params={"grad-clipping": {"value": "0.25"}}, max_epochs=1)
    result = execute_plain(spec)
    assert result.status == "ok", result.reason
    assert calls == [0.25] * result.optimizer_steps
    assert "clip_grad_norm_(parameters, 0.25)" in result.details["plain_changes"][0]


def test_grad_accumulation_steps_every_k_batches_and_at_the_epoch_end(make_spec: Callable[..., RunSpec]) -> None:
    result = execute_plain(make_spec(["grad-accumulation"], trick_params={"grad-accumulation": {"k": "4"}}, max_epochs=2))
    assert result.status == "ok", result.reason
    per_epoch = result.steps // 2  # 18 batches of 64 on digits: 4 steps of 4 batches, then one of 2
    assert result.optimizer_steps == 2 * -(-per_epoch // 4)


def test_same_effective_batch_divides_the_micro_batch(make_spec: Callable[..., RunSpec], seen: list[dict[str, Any]]) -> None:
    spec = make_spec(["grad-accumulation"], trick_params={"grad-accumulation": {"k": "4", "mode": "same-effective-batch"}}, max_epochs=1)
    result = execute_plain(spec)
    assert result.status == "ok", result.reason
    assert result.batch_size == 16 and max(s["batch"] for s in seen) == 16


def test_what_cannot_run_or_has_no_plain_form_is_said(make_spec: Callable[..., RunSpec]) -> None:
    with pytest.raises(TrickSkipped, match="needs a CUDA GPU"):
        plain_loop_for(make_spec(["16-mixed"]))
    with pytest.raises(NoPlainEquivalent, match="lr-finder"):
        plain_loop_for(make_spec(["lr-finder"]))
    skipped = execute_plain(make_spec(["16-mixed"]))
    assert skipped.status == "skipped" and "CUDA" in skipped.reason


def test_which_tricks_have_a_plain_form() -> None:
    with_form = sorted(name for name in TRICKS.names() if has_plain_equivalent(TRICKS.get(name)))
    assert {"16-mixed", "bf16-mixed", "bf16-true", "grad-accumulation", "grad-clipping"} <= set(with_form)
    assert "lr-finder" not in with_form and "swa" not in with_form


def _in_process_run_one(spec: RunSpec, run_dir: Path, timeout_s: float | None = None, plain: bool = False, using: Any = None) -> Any:
    """The runner without its process: the parity logic is under test here, not the isolation."""
    return execute_plain(spec) if plain else execute(spec)


def test_parity_pairs_each_trick_with_its_plain_form_and_rotates_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    def run_one(spec: RunSpec, run_dir: Path, timeout_s: float | None = None, plain: bool = False, using: Any = None) -> Any:
        started.append(f"{'plain' if plain else 'harness'}:{spec.label}:r{spec.repeat}")
        return _in_process_run_one(spec, run_dir, timeout_s, plain)

    monkeypatch.setattr(parity_cmd, "run_one", run_one)
    options = RunOptions(
        dataset="digits", dataset_reason="test", data_dir=str(tmp_path), loader="device", batch_size=64, lr=1e-3,
        max_epochs=1, max_steps=-1, seed=42, block_steps=4, warmup_blocks=0, synthetic_size=256, num_workers=0, checkpoints=False,
    )
    parity = parity_cmd.measure_parity(
        options, "autoencoder", "cpu", 2, tmp_path, trick_runs=[["grad-clipping"], ["16-mixed"], ["lr-finder"]],
    )
    rows = {row.label: row for row in parity.tricks}
    assert rows["lr-finder"].status == "no plain equivalent" and not any("lr-finder" in s for s in started)
    assert rows["16-mixed"].status == "skipped" and sum("16-mixed" in s for s in started) == 1  # found once, not retried
    clipping = rows["grad-clipping"]
    assert clipping.status == "ok" and clipping.fidelity is not None and clipping.fidelity.repeats == 2
    assert clipping.harness_speedup is not None and clipping.plain_speedup is not None
    assert parity.baseline is not None and parity.baseline.repeats == 2
    assert parity.orders[0][0] != parity.orders[1][0], "the first slot must move from repeat to repeat"
    assert len(parity.foreign_cpu_shares) == len(started) - 1  # every ok process read the CPU counters (not the skip)


def test_parity_command_writes_the_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(parity_cmd, "run_one", _in_process_run_one)
    code = cli_main([
        "parity", "--accelerator", "cpu", "--tricks", "bf16-mixed,swa", "--repeats", "1", "--max-epochs", "1",
        "--synthetic-size", "512", "--batch-size", "64", "--warmup-blocks", "0", "--out", str(tmp_path),
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "| bf16-mixed | torch.autocast(dtype=torch.bfloat16)" in out
    assert "cannot tell: 1 repeat" in out and "| swa | no plain equivalent" in out
    (folder,) = tmp_path.glob("parity-*")
    data = json.loads((folder / "parity.json").read_text())["results"][0]
    assert data["workload"] == "autoencoder" and data["baseline"]["value"] > 0
    assert [row["label"] for row in data["tricks"]] == ["bf16-mixed", "swa"]
    assert (folder / "parity.md").read_text().startswith("# Parity with plain PyTorch")
