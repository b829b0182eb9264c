"""compile: torch.compile really compiles what training runs, its cost is recorded apart, and the row says
when nothing was compiled, or what recompiled and why.

Most tests use Dynamo's ``eager`` backend (Dynamo captures and guards the frames exactly as with
inductor, without generating C++), so they are quick; one runs inductor's C++ backend end to end.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from harness.executors.runner import run_all
from harness.executors.scratch import SCRATCH_ENV
from harness.spec import Result
from harness.trick import Setup
from harness.worker import execute
from tricks.compile import Compile


@pytest.fixture(autouse=True)
def fresh_dynamo(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Compiled frames and the cache variables the trick sets live in the process: each test starts and
    ends without them (the harness runs every run in a process of its own)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compile_spec(make_spec, **params: str):
    return make_spec(["compile"], trick_params={"compile": params}, max_epochs=2)


def test_compiled_steps_run_in_training_and_the_compile_time_is_its_own_number(make_spec) -> None:
    result = execute(make_spec(["compile"], trick_params={"compile": {"backend": "eager"}}, max_epochs=2, workload="cnn"))
    assert result.status == "ok", result.reason  # the CNN's torchmetrics validation step stays eager
    details = result.details
    assert details["compiled"] == ["forward", "training_step"] and details["compiled_frames_in_fit"] >= 1
    assert result.compile_s is not None and result.compile_s > 0
    assert details["first_step_s"] > result.step_time_ms / 1000  # the first step paid for the compile
    assert not any("compiled no frame" in w for w in details.get("warnings", []))


def test_lightnings_full_compile_of_a_torchmetrics_validation_step_fails_with_dynamos_reason(make_spec, tmp_path) -> None:
    """In a fresh process, as the harness runs it: the failure depends on what the process has imported and cached."""
    spec = make_spec(["compile"], trick_params={"compile": {"backend": "eager", "steps": "all"}}, max_epochs=1, workload="cnn")
    (result,) = run_all([spec], tmp_path, show_progress=False)
    assert result.status == "failed" and "Dynamo" in result.reason, result.reason  # torchmetrics#1780's class


def test_the_tutorial_autoencoder_compiles_through_training_step(make_spec) -> None:
    result = execute(compile_spec(make_spec, backend="eager"))  # training_step calls decoder(encoder(x)), not forward
    assert result.status == "ok", result.reason
    assert result.details["compiled_frames_in_fit"] >= 1 and "warnings" not in result.details or not any(
        "compiled no frame" in w for w in result.details["warnings"]
    )


def test_children_target_compiles_the_submodules_and_counts_the_partial_batch_recompile(make_spec) -> None:
    result = execute(compile_spec(make_spec, backend="eager", target="children"))
    assert result.status == "ok", result.reason
    details = result.details
    assert details["compiled"] == ["encoder", "decoder"] and details["compiled_frames_in_fit"] >= 2
    # digits: 1150 training images, batches of 64: the last one holds 62, a new shape
    assert details["recompiles_in_fit"] >= 1 and any("size mismatch" in r for r in details["recompile_reasons"])


def test_inductor_on_cpu_trains_to_the_same_loss(make_spec) -> None:
    baseline = execute(make_spec(max_epochs=2))
    compiled = execute(compile_spec(make_spec, target="children"))
    assert compiled.status == "ok", compiled.reason
    assert compiled.details["compile_backend"] == "inductor" and compiled.details["compiled_frames_in_fit"] >= 2
    assert math.isclose(compiled.val_loss, baseline.val_loss, rel_tol=1e-3)
    assert compiled.compile_s > 0.5  # a cold inductor compile of two graphs takes seconds, not a step's milliseconds


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)


def test_the_cold_cache_goes_in_the_runs_scratch_folder_which_the_harness_removes(make_spec, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing compiles here (torch.compile is lazy): where the trick points inductor and Triton, and what it removes."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv(SCRATCH_ENV, str(scratch))
    spec = make_spec(["compile"])
    trick = Compile()
    trick.apply(Setup(spec=spec, module=Tiny(), datamodule=None, trainer_kwargs={}))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(scratch / "inductor") and (scratch / "inductor").is_dir()
    assert os.environ["TRITON_CACHE_DIR"] == str(scratch / "inductor" / "triton")
    trick.record(Result.for_spec(spec, "ok"))
    assert (scratch / "inductor").is_dir()  # the harness's to remove, after the worker has ended


def test_a_worker_started_without_a_scratch_folder_makes_and_removes_its_own(make_spec, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCRATCH_ENV, raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    spec = make_spec(["compile"])
    trick = Compile()
    trick.apply(Setup(spec=spec, module=Tiny(), datamodule=None, trainer_kwargs={}))
    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert cache.name == "inductor" and cache.is_dir() and cache.parent.parent == tmp_path / "tmp"
    assert cache.parent.name.startswith(f"harness-scratch-{os.getpid()}-{spec.run_id}-")  # a killed run's: swept by the next harness
    trick.record(Result.for_spec(spec, "ok"))
    assert not cache.parent.exists()
