"""Parity: the harness's baseline against a plain PyTorch loop, same model, data, batch and device.

Both loops run in fresh processes, alternating order over three pairs, timed by the same
BlockTimer; the ratio of medians is the share of plain-PyTorch throughput the harness keeps.

The issue's target on CPU at batch size 256 is 0.8 (bare Lightning reaches about 0.85 there). On
this project's 2-core machines the ratio measures 0.80-0.82 with these settings (Lightning's own
per-step Python, ~0.45 ms of a ~2 ms step, is the gap). The benchmark records whether the target was
met, and fails below a regression floor of 0.75: per-step ``self.log`` or a per-step host read in
the harness drops the ratio to ~0.7 or below, while run-to-run noise on a shared machine reaches a
few hundredths.
"""

from __future__ import annotations

from pathlib import Path

from harness.commands.parity_cmd import measure_parity
from harness.plan import RunOptions

TARGET = 0.8
REGRESSION_FLOOR = 0.75


def test_parity_cpu_batch_256(benchmark, tmp_path: Path) -> None:
    options = RunOptions(
        dataset="synthetic", dataset_reason="parity benchmark", data_dir=str(tmp_path), loader="device",
        batch_size=256, lr=1e-3, max_epochs=10, max_steps=-1, seed=42, block_steps=10, warmup_blocks=3,
        synthetic_size=16384, num_workers=0,
    )
    parity = benchmark.pedantic(measure_parity, args=(options, "autoencoder", "cpu", 3, tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(
        ratio=parity.ratio,
        target=TARGET,
        meets_target=parity.ratio >= TARGET,
        harness_samples_per_s=parity.harness_samples_per_s,
        plain_samples_per_s=parity.plain_samples_per_s,
    )
    verdict = "meets" if parity.ratio >= TARGET else "misses"
    print(f"\nparity (harness / plain PyTorch), CPU, batch 256: {parity.ratio:.3f} ({verdict} the {TARGET} target)")
    assert parity.ratio >= REGRESSION_FLOOR, (
        f"harness keeps {parity.ratio:.2f} of plain PyTorch's throughput, under the {REGRESSION_FLOOR} floor: "
        f"harness {parity.harness_samples_per_s}, plain {parity.plain_samples_per_s}"
    )
