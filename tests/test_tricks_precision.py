"""Precision tricks: the dtype really seen inside training_step, and no silent relabelling."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch

import tricks.mixed_precision
from harness.spec import RunSpec
from harness.worker import execute
from harness.workload import WORKLOADS
from models.autoencoder import AutoencoderWorkload, LitAutoEncoder


class DtypeProbeAutoEncoder(LitAutoEncoder):
    """The seed autoencoder, noting inside training_step what autocast and the weights look like."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[bool, torch.dtype, torch.dtype, torch.dtype]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0].view(batch[0].size(0), -1)
        code = self.encoder(x)
        self.seen.append(
            (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), code.dtype, self.encoder.l1[0].weight.dtype)
        )
        return super().training_step(batch, batch_idx)


class DtypeProbeWorkload(AutoencoderWorkload):
    name = "test-dtype-probe"
    summary = "Test only: the seed autoencoder recording dtypes inside training_step."

    def build_module(self, spec: RunSpec) -> LitAutoEncoder:
        return DtypeProbeAutoEncoder(lr=spec.lr, batch_size=spec.batch_size)


@pytest.fixture
def probe_workload(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registered for one test only, so that tests parametrised over every workload never see it."""
    WORKLOADS.load()
    monkeypatch.setitem(WORKLOADS._entries, DtypeProbeWorkload.name, DtypeProbeWorkload)
    return DtypeProbeWorkload.name


class KeepModule(pl.Callback):
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.module = pl_module


def run_probe(make_spec, tricks: list[str]) -> tuple[Any, list[tuple[bool, torch.dtype, torch.dtype, torch.dtype]]]:
    keep = KeepModule()
    result = execute(make_spec(tricks, workload=DtypeProbeWorkload.name, max_epochs=1), extra_callbacks=[keep])
    assert result.status == "ok", result.reason
    return result, keep.module.seen


def test_bf16_mixed_autocasts_to_bf16_inside_training_step_with_fp32_weights(make_spec, probe_workload: str) -> None:
    result, seen = run_probe(make_spec, ["bf16-mixed"])
    assert result.precision == result.details["precision"] == "bf16-mixed"
    assert len(seen) == 18
    assert set(seen) == {(True, torch.bfloat16, torch.bfloat16, torch.float32)}


def test_baseline_sees_no_autocast(make_spec, probe_workload: str) -> None:
    _, seen = run_probe(make_spec, [])
    assert {(enabled, out, weight) for enabled, _, out, weight in seen} == {(False, torch.float32, torch.float32)}


def test_bf16_true_keeps_the_weights_themselves_in_bf16(make_spec, probe_workload: str) -> None:
    result, seen = run_probe(make_spec, ["bf16-true"])
    assert result.details["precision"] == "bf16-true"
    assert {(out, weight) for _, _, out, weight in seen} == {(torch.bfloat16, torch.bfloat16)}


def test_16_mixed_on_cpu_is_skipped_not_relabelled(make_spec) -> None:
    result = execute(make_spec(["16-mixed"], max_epochs=1))
    assert result.status == "skipped"
    assert "CUDA" in result.reason and "bf16-mixed" in result.reason
    assert result.steps is None and result.samples_per_s is None


def test_any_precision_lightning_substitutes_is_caught_after_the_trainer_is_built(make_spec, monkeypatch) -> None:
    """Without the up-front CPU check, Lightning would run bf16-mixed for 16-mixed: the second guard skips it."""
    monkeypatch.setattr(tricks.mixed_precision, "unsupported_reason", lambda precision, accelerator: "")
    result = execute(make_spec(["16-mixed"], max_epochs=1))
    assert result.status == "skipped"
    assert "asked for precision 16-mixed but Lightning chose bf16-mixed" in result.reason
    assert result.steps is None


@pytest.mark.parametrize("combo", [["16-mixed", "bf16-mixed"], ["bf16-true", "bf16-mixed"]])
def test_two_precisions_in_one_run_are_refused(make_spec, combo: list[str]) -> None:
    result = execute(make_spec(combo, max_epochs=1))
    assert result.status == "failed" and "both set Trainer(precision=...)" in result.reason
