"""cpu-threads: the run trains with the thread count asked for, the next run does not inherit it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.errors import TrickSkipped
from harness.executors.runner import run_one
from harness.spec import RunSpec
from harness.worker import execute
from tricks.cpu_threads import CpuThreads, physical_cores


def test_the_run_trains_with_n_threads_and_the_next_run_with_torch_s_default(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    """Two fresh processes through the runner, the trick's first: the thread count torch reports inside
    fit is the trick's in its run, and torch's own default in the run after it."""
    default = torch.get_num_threads()
    if default < 2:
        pytest.skip("a machine with one core cannot tell 1 thread from the default")
    threads = run_one(make_spec(["cpu-threads"], trick_params={"cpu-threads": {"n": "1"}}, max_epochs=1), tmp_path)
    after = run_one(make_spec(max_epochs=1), tmp_path)
    assert threads.status == "ok", threads.reason
    assert threads.details["threads_in_fit"]["intra_op"] == 1
    assert threads.details["torch_threads_before"] == default
    assert after.status == "ok" and after.details["threads_in_fit"]["intra_op"] == default


def test_n_auto_is_the_physical_cores_and_interop_follows(make_spec: Callable[..., RunSpec]) -> None:
    result = execute(make_spec(["cpu-threads"], trick_params={"cpu-threads": {"n": "auto", "interop": "same"}}, max_epochs=1))
    assert result.status == "ok", result.reason
    assert result.details["torch_threads"] == physical_cores() == result.details["threads_in_fit"]["intra_op"]
    # inter-op threads can be set once per process, before inter-op work: a test process may be past that
    assert "torch_interop_threads" in result.details


def test_skipped_on_a_gpu_run_unless_asked() -> None:
    setup = SimpleNamespace(accelerator="gpu", details={})
    with pytest.raises(TrickSkipped, match="on_gpu=true"):
        CpuThreads(n="1").apply(setup)  # type: ignore[arg-type]
    before = torch.get_num_threads()
    CpuThreads(n="1", interop="keep", on_gpu=True).apply(setup)  # type: ignore[arg-type]
    assert torch.get_num_threads() == 1 and setup.details["torch_threads_before"] == before


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        CpuThreads(n="0")
    with pytest.raises(ValueError, match="interop"):
        CpuThreads(interop="many")


def test_physical_cores_counts_cores_not_hyperthreads(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    # one core, two hyperthreads
    cpuinfo.write_text("processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 0\n")
    assert physical_cores(cpuinfo) == 1
    assert physical_cores(tmp_path / "missing") >= 1
