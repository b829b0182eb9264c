"""Every registered workload trains on CPU, learns, and reports what it should; sizes are settable."""

from __future__ import annotations

import math

import pytest

from harness.errors import UserError
from harness.workload import WORKLOADS
from harness.worker import execute

# Small but real: enough steps for the loss to fall, a few seconds each on two cores.
TINY = {
    "autoencoder": {},
    "cnn": {"width": "8", "hidden": "32"},
    "transformer": {"d_model": "32", "layers": "1", "heads": "2", "seq_len": "16", "vocab": "64", "sequences": "600"},
}


@pytest.mark.parametrize("name", WORKLOADS.names())
def test_workload_trains_and_its_loss_falls(name: str, make_spec) -> None:
    spec = make_spec(workload=name, workload_params=TINY.get(name, {}), max_epochs=3, batch_size=32, lr=3e-3)
    result = execute(spec)
    assert result.status == "ok", result.reason
    assert result.curve[-1]["val_loss"] < result.curve[0]["val_loss"]
    assert math.isfinite(result.test_loss) and result.samples_per_s > 0
    assert result.flops_per_sample > 0 and result.flops_per_s > 0 and result.mfu is None  # CPU: no MFU
    if name == "cnn":  # accuracy via torchmetrics, well above the 0.1 of chance
        assert result.details["metrics"]["val_acc"] > 0.5 and result.details["metrics"]["test_acc"] > 0.5
    if name == "transformer":  # the Markov chain is learnable: below the loss of a uniform guess
        assert result.val_loss < 0.8 * math.log(int(TINY[name]["vocab"]))


def test_transformer_size_is_set_from_params_and_checked() -> None:
    workload = WORKLOADS.get("transformer").from_params({"d_model": "64", "heads": "8"})
    assert workload.d_model == 64 and workload.heads == 8
    with pytest.raises(UserError, match="divisible by heads"):
        WORKLOADS.get("transformer").from_params({"d_model": "30", "heads": "4"})
    with pytest.raises(UserError, match="'dmodel'.*d_model"):
        WORKLOADS.get("transformer").from_params({"dmodel": "64"})
