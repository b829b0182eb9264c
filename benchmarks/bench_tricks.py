"""The baseline and every registered trick on the seed workload, on CPU, each in its own process.

pytest-benchmark times the whole isolated run (start-up included); the harness's own steady-state
figures (samples/s, peak memory, losses) and their ratios to the baseline go into ``extra_info``,
so ``--benchmark-json`` keeps them next to the machine and commit info pytest-benchmark records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.executors.runner import run_one
from harness.spec import Result
from harness.testing import tiny_spec
from harness.trick import TRICKS

BUDGET = dict(dataset="digits", max_epochs=2, block_steps=4, batch_size=64)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Result:
    run_dir = tmp_path_factory.mktemp("baseline")
    result = run_one(tiny_spec(run_dir, **BUDGET), run_dir)
    assert result.status == "ok", result.reason
    return result


def figures(result: Result, baseline: Result) -> dict[str, object]:
    info: dict[str, object] = {
        "status": result.status, "reason": result.reason, "precision": result.precision,
        "samples_per_s": result.samples_per_s, "peak_mem_bytes": result.peak_mem_bytes,
        "train_loss": result.train_loss, "val_loss": result.val_loss, "wall_s": result.wall_s,
    }
    if result.status == "ok":
        info["samples_per_s_ratio"] = result.samples_per_s / baseline.samples_per_s
        info["peak_mem_ratio"] = result.peak_mem_bytes / baseline.peak_mem_bytes
        info["val_loss_ratio"] = result.val_loss / baseline.val_loss
    return info


def test_baseline(benchmark, baseline: Result, tmp_path: Path) -> None:
    result = benchmark.pedantic(run_one, args=(tiny_spec(tmp_path, **BUDGET), tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(figures(result, baseline))
    assert result.status == "ok", result.reason
    # Same seed, data and budget: two baseline runs must train to the same loss.
    assert result.val_loss == pytest.approx(baseline.val_loss, rel=1e-5)


@pytest.mark.parametrize("trick", TRICKS.names())
def test_trick(benchmark, trick: str, baseline: Result, tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, [trick], **BUDGET)
    result = benchmark.pedantic(run_one, args=(spec, tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(figures(result, baseline))
    assert result.status in ("ok", "skipped"), result.reason
    if result.status == "skipped":
        assert result.reason, "a skipped row must say why"
    else:
        assert result.samples_per_s > 0 and result.peak_mem_bytes > 0
