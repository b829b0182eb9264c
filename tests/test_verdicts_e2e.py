"""The verdict engine end to end: a trick with a planted slowdown, through the real runner (one process
per run), must come out "slower", at least by the planted factor (on a machine without contention).

On a machine that other processes load unevenly (this project's 2-core machine, shared), runs of the
same setup can differ 4x from one minute to the next, and the trick's longer runs meet a different
load than the baseline's, so what ran is no longer the planted factor. When the rows carry contention
warnings the test therefore asks only that the engine claim nothing false (slower or cannot tell,
never faster or the same) and name the contention."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from harness.executors.runner import run_all
from harness.report.verdicts import CANNOT_TELL, HURTS, judge
from harness.testing import Slowdown, tiny_spec

FACTOR = 3.0  # the trick's steps take three times as long: its throughput is 1/3 of the baseline's
# 10 runs (forked: ~1 s each to start, then 1-6 s of training). With 3 repeats (t quantile 4.30) the
# interval was wide enough to cross the bound below on the trick's own spread: a fresh-clone CI measured
# 0.27x (95% CI 0.19-0.37) for a planted 0.33x, baseline runs within 2%, trick runs 11.5k-14.7k samples/s.
# 5 repeats (t 2.78) narrow it by a third with the same assertions.
REPEATS = 5


def register_in_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed-distribution entry point for harness.testing.Slowdown, on the workers' PYTHONPATH only."""
    dist = tmp_path / "plugins" / "slowdown_for_tests-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slowdown-for-tests\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[harness.tricks]\n{Slowdown.name} = harness.testing:Slowdown\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(dist.parent), os.environ.get("PYTHONPATH", "")) if p))
    importlib.invalidate_caches()


def test_a_planted_3x_slowdown_through_the_real_runner_is_called_slower_at_least_by_the_planted_factor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_in_workers(tmp_path, monkeypatch)
    # one torch thread in every worker: on a loaded 2-core machine two OpenMP threads collapse (see README,
    # "Threads"), which would spread the runs far more than the planted factor
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    specs = []
    for repeat in range(REPEATS):
        # ~13k synthetic training samples: about 1,000 steps in blocks of 10 over 5 epochs, over a second of
        # timed training for the baseline, so that the window is long enough to judge
        common = dict(dataset="synthetic", synthetic_size=20480, max_epochs=5, block_steps=10, repeat=repeat,
                      checkpoints=False)
        arms = [tiny_spec(tmp_path, run_id=f"baseline-r{repeat}", **common),
                tiny_spec(tmp_path, [Slowdown.name], run_id=f"slow-r{repeat}",
                          trick_params={Slowdown.name: {"factor": str(FACTOR)}}, **common)]
        specs += arms if repeat % 2 == 0 else arms[::-1]  # alternate who goes first
    results = run_all(specs, tmp_path, show_progress=False)
    assert [r.status for r in results] == ["ok"] * len(specs), [r.reason for r in results]
    for result in results:
        print(result.run_id, f"{result.samples_per_s:.0f} samples/s", result.blocks_measured, "blocks",
              f"{result.step_time_ms:.2f} ms/step", result.details.get("foreign_cpu_share"))
    verdict = judge(results, changes_budget=())[0]
    print(verdict.line())
    assert verdict.trick == Slowdown.name
    assert "95% CI" in verdict.text and f"{REPEATS} repeats" in verdict.text
    if verdict.contention == 0:
        assert verdict.speed.call == "slower" and verdict.category == HURTS, verdict.text
        # The planted factor bounds what ran from one side only: the busy wait also slows the step's own
        # compute that follows it (caches, the core's clock). During a full suite with another job's tests
        # beside it (contention under 1% in every run) the baseline stepped in 1.37 ms and the trick's compute in 2.16 ms before its
        # 2x wait: 0.20x (95% CI 0.17-0.24) for a planted 0.33x. So: at least as slow as planted (within
        # 10%), never faster; the exact coverage of the interval is tested on simulated worlds.
        assert verdict.speed.high <= 1.1 / FACTOR, verdict.text
    else:
        # a loaded machine: the 3x longer trick runs meet more of the other processes' load than the
        # baseline's, so the planted factor is no longer the truth of what ran (here 0.27x and 0.20x for a
        # planted 0.33x, with 50-67% of the CPU taken by others); the engine must still claim nothing
        # false, and name the contention
        assert verdict.speed.call in ("slower", "unclear") and verdict.category in (HURTS, CANNOT_TELL), verdict.text
        assert verdict.speed.high > 0 and verdict.speed.low < 1 / 1.1
        assert "contention warnings on" in verdict.text
