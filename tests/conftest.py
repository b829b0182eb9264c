"""Shared fixtures: tiny, fast, deterministic CPU runs on the digits that scikit-learn ships."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.spec import BASELINE, COMBINE, RunSpec

# Lightning's tips and the "GPU available" banner are noise in test output.
os.environ.setdefault("PYTHONWARNINGS", "ignore")


def spec_for(run_dir: Path, tricks: list[str] | None = None, **overrides: Any) -> RunSpec:
    """A RunSpec for a tiny CPU run of the seed autoencoder on digits; override any field."""
    tricks = tricks or []
    label = COMBINE.join(tricks) or BASELINE
    fields: dict[str, Any] = dict(
        run_id=f"autoencoder-cpu-{label}-r0",
        label=label,
        tricks=tricks,
        trick_params={},
        workload="autoencoder",
        dataset="digits",
        dataset_reason="digits requested",
        data_dir=str(run_dir / "data"),
        loader="device",
        accelerator="cpu",
        batch_size=64,
        lr=1e-3,
        max_epochs=2,
        max_steps=-1,
        seed=42,
        repeat=0,
        block_steps=4,
        warmup_blocks=1,
        synthetic_size=512,
        num_workers=0,
        run_dir=str(run_dir),
    )
    fields.update(overrides)
    return RunSpec(**fields)


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., RunSpec]:
    """``make_spec(["grad-clipping"], max_epochs=1)`` -> a RunSpec writing under tmp_path."""

    def factory(tricks: list[str] | None = None, **overrides: Any) -> RunSpec:
        return spec_for(tmp_path, tricks, **overrides)

    return factory
