"""DDP on two CPU processes (gloo), through Lightning's own ``strategy="ddp"``.

The end-to-end test runs the CLI as a user would: ``--accelerator cpu --devices 2 --strategy ddp``.
Each DDP run starts two Python processes, so the file costs about a minute.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import UserError
from harness.measuring.distributed import resolve_strategy
from harness.testing import tiny_spec
from harness.worker import execute
from harness.workloads.data import TensorBatches

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SAMPLES = 1150  # digits' training split


def test_ranks_see_disjoint_shards_of_equal_length() -> None:
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    shards = [TensorBatches(x, y, batch_size=2, shuffle=True, seed=3, rank=rank, world_size=3, epoch_of=lambda: 0) for rank in range(3)]
    seen = [torch.cat([labels for _, labels in shard]) for shard in shards]
    assert [len(shard) for shard in shards] == [2, 2, 2] and [len(s) for s in seen] == [4, 4, 4]  # 10 padded to 12
    everything = torch.cat(seen)
    assert set(everything.tolist()) == set(range(10)) and len(everything) == 12  # two samples repeated as padding
    # the epoch drives the order, so every rank shuffles alike and a resumed epoch repeats its order
    again = TensorBatches(x, y, batch_size=2, shuffle=True, seed=3, rank=1, world_size=3, epoch_of=lambda: 0)
    later = TensorBatches(x, y, batch_size=2, shuffle=True, seed=3, rank=1, world_size=3, epoch_of=lambda: 1)
    assert torch.equal(torch.cat([b for _, b in again]), seen[1])
    assert not torch.equal(torch.cat([b for _, b in later]), seen[1])


@pytest.mark.parametrize(
    ("strategy", "devices", "message"),
    [
        ("ddp_spawn", 2, "runs fit in spawned or forked processes"),
        ("ddp_fork", 2, "use --strategy ddp"),
        ("dpp", 2, "did you mean ddp"),
    ],
)
def test_strategies_the_harness_cannot_measure_are_refused(strategy: str, devices: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_strategy(strategy, devices, 1)


def test_auto_on_several_devices_means_ddp() -> None:
    assert resolve_strategy("auto", 2, 1) == "ddp"
    assert resolve_strategy("auto", 1, 1) == "auto"


def test_batch_size_finder_is_skipped_under_ddp_before_any_process_starts(tmp_path: Path) -> None:
    result = execute(tiny_spec(tmp_path, ["batch-size-finder"], devices=2, strategy="ddp"))
    assert result.status == "skipped"
    assert "not supported with distributed strategies" in result.reason and "--devices 1" in result.reason


def test_ddp_on_two_cpu_processes_end_to_end(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "harness", "run", "--tricks", "grad-clipping,batch-size-finder", "--accelerator", "cpu",
        "--devices", "2", "--strategy", "ddp", "--dataset", "digits", "--max-epochs", "2", "--repeats", "1", "--block-steps", "3",
        "--quiet", "--out", str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(tmp_path.glob("run-*"))
    rows = {row["trick"]: row for row in map(json.loads, (run_dir / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"baseline", "grad-clipping", "batch-size-finder"}  # one row per run, written by rank 0 only
    assert rows["batch-size-finder"]["status"] == "skipped"
    per_rank_batches = math.ceil(TRAIN_SAMPLES / 2 / 64)  # 575 samples per rank in batches of 64
    for trick in ("baseline", "grad-clipping"):
        row = rows[trick]
        assert row["status"] == "ok", row["reason"]
        assert row["world_size"] == 2 and row["strategy"] == "DDPStrategy"
        assert row["steps"] == 2 * per_rank_batches  # each rank ran its half of the data
        assert row["optimizer_steps"] == 2 * per_rank_batches
        assert row["curve"][-1]["samples"] == 2 * 2 * math.ceil(TRAIN_SAMPLES / 2)  # both ranks' samples
        peaks = row["details"]["peak_mem_per_rank"]
        assert len(peaks) == 2 and row["peak_mem_bytes"] == max(peaks) and min(peaks) > 0
        assert set(row["checkpoints"]) == {"best", "last"} and (run_dir / row["checkpoints"]["best"]).is_file()
        assert row["test_loss"] is not None and row["val_loss"] is not None and row["train_loss"] > 0
    assert rows["grad-clipping"]["details"]["gradient_clip_val"] == 1.0
    report = (run_dir / "report.md").read_text()
    assert "2 x cpu" in report and "samples/s summed over the processes" in report
