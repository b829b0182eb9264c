"""What a run costs before it measures anything: forked from the pre-imported server against spawned cold.

One measurement, alternating: 4 pairs of the same small spec (seed autoencoder, digits, 2 epochs,
checkpoints on, as the main job), one forked and one spawned in each pair, the order swapped every
pair. A run's overhead is the time the harness waited for it minus the time the worker itself
reports (``wall_s``: data, setup, fit, validate, test); what remains is the process start, the
imports (spawn) or the fork (fork), and the exit. The fork server's own start (its imports, once per
invocation) is recorded apart, since every later run shares it.

Asserted as ratios, never absolute times: the fork's per-run overhead must be under a quarter of the
spawn's (the issue's target: under 1 s from ~5 s), and the runs' own throughput must not differ: the
fork/spawn samples/s interval over the pairs must not lie wholly outside 1/1.1-1.1, as
``bench_parity`` judges fidelity. The throughput check holds only when no run saw other processes
take over 15% of the CPUs; otherwise it is skipped with its figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.executors.isolation import child_env
from harness.executors.runner import launchers, run_one
from harness.measuring.stats import paired_interval, ratio
from harness.testing import tiny_spec

PAIRS = 4
QUIET_SHARE = 0.15
BAND = 1.10


def test_fork_overhead_per_run_against_spawn(benchmark, tmp_path: Path) -> None:
    benchmark.extra_info["pairs"] = PAIRS
    overheads: dict[str, list[float]] = {"fork": [], "spawn": []}
    blocks: dict[str, list[list[float]]] = {"fork": [], "spawn": []}
    shares: list[float] = []

    def measure() -> float:
        with launchers("fork", tmp_path) as using:
            server_started = time.perf_counter()
            assert using.server is not None
            using.server.start(child_env())
            server_s = time.perf_counter() - server_started
            for pair in range(PAIRS):
                order = ("fork", "spawn") if pair % 2 == 0 else ("spawn", "fork")
                for isolation in order:
                    spec = tiny_spec(tmp_path, run_id=f"{isolation}-{pair}", seed=42)
                    started = time.perf_counter()
                    result = run_one(spec, tmp_path, using=using if isolation == "fork" else None)
                    waited = time.perf_counter() - started
                    assert result.status == "ok" and result.isolation == isolation, result.reason
                    overheads[isolation].append(waited - result.wall_s)
                    blocks[isolation].append(result.block_samples_per_s)
                    shares.append(float(result.details.get("foreign_cpu_share") or 0.0))
        return server_s

    server_s = benchmark.pedantic(measure, rounds=1, iterations=1)
    fork_s = sorted(overheads["fork"])[PAIRS // 2]
    spawn_s = sorted(overheads["spawn"])[PAIRS // 2]
    speed = paired_interval([blocks["spawn"], blocks["fork"]], ratio)
    benchmark.extra_info.update(
        server_start_s=server_s, fork_overhead_s=overheads["fork"], spawn_overhead_s=overheads["spawn"],
        median_fork_overhead_s=fork_s, median_spawn_overhead_s=spawn_s, overhead_ratio=fork_s / spawn_s,
        fork_over_spawn_samples_per_s=[speed.value, speed.low, speed.high], max_foreign_cpu_share=max(shares),
    )
    print(
        f"\nfork server start {server_s:.2f} s (once); per-run overhead: fork {fork_s:.2f} s, spawn {spawn_s:.2f} s "
        f"(median of {PAIRS}; ratio {fork_s / spawn_s:.2f}); samples/s fork/spawn {speed.describe()}; "
        f"other processes took up to {max(shares):.0%} of the CPUs"
    )
    assert fork_s < 0.25 * spawn_s, f"fork {overheads['fork']} s against spawn {overheads['spawn']} s per run"
    if max(shares) > QUIET_SHARE:
        pytest.skip(f"the machine was busy (up to {max(shares):.0%} of the CPUs elsewhere): throughput {speed.describe()} not asserted")
    assert speed.high >= 1 / BAND and speed.low <= BAND, f"forked runs' samples/s differ from spawned ones': {speed.describe()}"
