"""The summary table: repeats pooled over blocks with a noisy flag, GPU/CPU ratio, FLOP/s and MFU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.report import write_report
from harness.report.table import display_table, summary_frame
from harness.spec import Result


def row(trick: str, accelerator: str = "cpu", repeat: int = 0, blocks: list[float] | None = None, **fields) -> Result:
    blocks = blocks or [1000.0, 1000.0]
    values = dict(samples_per_s=sorted(blocks)[len(blocks) // 2], samples_per_s_iqr=0.0, step_time_ms=1.0,
                  peak_mem_bytes=2**30, train_loss=0.1, val_loss=0.1, test_loss=0.1, wall_s=1.0, fit_s=1.0,
                  noisy=False, block_samples_per_s=blocks, precision="32-true", device_name="dev", batch_size=64)
    values.update(fields)
    return Result(run_id=f"{trick}-{accelerator}-{repeat}", trick=trick, workload="autoencoder", dataset="digits",
                  accelerator=accelerator, repeat=repeat, status="ok", **values)


def test_throughput_is_pooled_over_the_blocks_of_all_repeats() -> None:
    # each repeat is steady on its own, but they disagree: the pooled cell must say so
    results = [row("baseline", repeat=0, blocks=[1000.0] * 4), row("baseline", repeat=1, blocks=[1500.0] * 4)]
    (cell,) = summary_frame(results).to_dict("records")
    assert cell["samples_per_s"] == pytest.approx(1250.0)
    assert cell["samples_per_s_iqr"] == pytest.approx(500.0)
    assert cell["noisy"] and cell["repeats"] == 2
    table = display_table(summary_frame(results))
    assert "noisy" in table.loc[0, "samples/s"] and table.loc[0, "runs"] == "2"


def test_steady_repeats_are_not_noisy() -> None:
    results = [row("baseline", repeat=r, blocks=[1000.0, 1010.0, 990.0]) for r in range(3)]
    (cell,) = summary_frame(results).to_dict("records")
    assert cell["samples_per_s"] == pytest.approx(1000.0) and not cell["noisy"]


def test_gpu_rows_carry_their_speed_over_the_cpu_and_their_mfu() -> None:
    results = [
        row("baseline", "cpu", blocks=[1000.0]), row("bf16-mixed", "cpu", blocks=[500.0]),
        row("baseline", "gpu", blocks=[8000.0], flops_per_s=2e14, mfu=0.2),
        row("bf16-mixed", "gpu", blocks=[40000.0], flops_per_s=1e15 - 1, mfu=0.5),
    ]
    summary = summary_frame(results)
    gpu = summary[summary["accelerator"] == "gpu"].set_index("trick")
    assert gpu.loc["baseline", "gpu_cpu_speed"] == pytest.approx(8.0)
    assert gpu.loc["bf16-mixed", "gpu_cpu_speed"] == pytest.approx(80.0)
    assert summary[summary["accelerator"] == "cpu"]["gpu_cpu_speed"].isna().all()
    table = display_table(summary[summary["accelerator"] == "gpu"].reset_index(drop=True))
    assert list(table["MFU"]) == ["20.0%", "50.0%"] and list(table["GPU/CPU"]) == ["8.0x", "80.0x"]
    assert list(table["FLOP/s"]) == ["200 T", "1000 T"]
    cpu_table = display_table(summary[summary["accelerator"] == "cpu"].reset_index(drop=True))
    assert "MFU" not in cpu_table.columns and "GPU/CPU" not in cpu_table.columns


def test_noisy_flag_reaches_every_format(tmp_path: Path) -> None:
    results = [row("baseline", repeat=0, blocks=[1000.0] * 4), row("baseline", repeat=1, blocks=[1500.0] * 4)]
    write_report(tmp_path, results, env={})
    assert "noisy" in (tmp_path / "report.md").read_text()
    assert "noisy" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())[0]["noisy"] is True
    header, first = (tmp_path / "summary.csv").read_text().splitlines()[:2]
    assert dict(zip(header.split(","), first.split(",")))["noisy"] == "True"
