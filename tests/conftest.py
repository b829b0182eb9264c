"""Shared fixtures: tiny, fast, deterministic CPU runs on the digits that scikit-learn ships."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.spec import RunSpec
from harness.testing import tiny_spec

# Hypothesis draws the same examples on every run (CI must be deterministic); to hunt for new ones:
# python -m pytest tests/test_safety_fuzz.py --hypothesis-profile=explore
try:
    from hypothesis import settings

    settings.register_profile("default", derandomize=True)
    settings.register_profile("explore", derandomize=False, max_examples=500)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # the dev extra brings it (tests/test_safety_fuzz.py needs it)
    pass

# Lightning's tips and the "GPU available" banner are noise in test output.
os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., RunSpec]:
    """``make_spec(["grad-clipping"], max_epochs=1)`` -> a RunSpec writing under tmp_path."""

    def factory(tricks: list[str] | None = None, **overrides: Any) -> RunSpec:
        return tiny_spec(tmp_path, tricks, **overrides)

    return factory


PROBES = Path(__file__).resolve().parent / "probes"  # probe_models.py: a user's own module, for the runs' processes


@pytest.fixture
def probe_spec(make_spec: Callable[..., RunSpec], monkeypatch: pytest.MonkeyPatch) -> Callable[..., RunSpec]:
    """``probe_spec("killed", kill=True)`` -> a RunSpec training tests/probes/probe_models.py's Probe (init
    arguments as given) for one epoch; the folder goes on PYTHONPATH, so the runs' processes import it
    as a user's own package."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PROBES), os.environ.get("PYTHONPATH", "")) if p))

    def factory(run_id: str, block_steps: int = 1, **init_args: Any) -> RunSpec:
        return make_spec(
            run_id=run_id, workload="probe_models:Probe", datamodule="probe_models:Data", init_args=init_args,
            max_epochs=1, block_steps=block_steps, warmup_blocks=0, checkpoints=False,
        )

    return factory


@pytest.fixture(autouse=True)
def restore_cpu_threads() -> Any:
    """Tests run tricks in-process; the harness runs each in its own process. A trick that sets torch's
    thread count (cpu-threads) must not slow every later test, so the count is put back after each."""
    import torch

    threads = torch.get_num_threads()
    variables = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    yield
    torch.set_num_threads(threads)
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
