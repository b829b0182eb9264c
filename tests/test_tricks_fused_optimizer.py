"""fused-optimizer: the optimizer Lightning trains with is the fused (or foreach) one; a module without
the seam is skipped with the reason."""

from __future__ import annotations

import pytest

from harness.worker import execute


@pytest.mark.parametrize(("impl", "fused", "foreach"), [("fused", True, None), ("foreach", False, True), ("for-loop", False, False)])
def test_the_optimizer_trained_with_uses_the_implementation_asked_for(impl: str, fused: bool, foreach: bool | None, make_spec) -> None:
    result = execute(make_spec(["fused-optimizer"], trick_params={"fused-optimizer": {"impl": impl}}, max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.details["optimizer"] == "Adam"
    assert result.details["optimizer_fused"] is fused and result.details["optimizer_foreach"] is foreach


def test_the_transformers_adamw_takes_it_too(make_spec) -> None:
    result = execute(make_spec(["fused-optimizer"], workload="transformer", max_epochs=1,
                               workload_params={"sequences": "640", "seq_len": "16", "d_model": "32", "heads": "2", "layers": "1"}))
    assert result.status == "ok", result.reason
    assert result.details["optimizer"] == "AdamW" and result.details["optimizer_fused"] is True


def test_a_module_without_the_seam_is_skipped_with_the_reason(make_spec, monkeypatch) -> None:
    from models.autoencoder import AutoencoderWorkload

    build = AutoencoderWorkload.build_module

    def without_seam(self, spec):  # as a third-party module: its configure_optimizers takes no options
        module = build(self, spec)
        del module.optimizer_options
        return module

    monkeypatch.setattr(AutoencoderWorkload, "build_module", without_seam)
    result = execute(make_spec(["fused-optimizer"], max_epochs=1))
    assert result.status == "skipped" and "no optimizer_options seam" in result.reason
