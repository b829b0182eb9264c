"""``--profiler`` keeps Lightning's profiler output in the run folder; ``--weight-histograms`` logs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, EventAccumulator

from harness.report import write_report
from harness.spec import RunSpec
from harness.worker import execute


@pytest.mark.parametrize(("profiler", "expected"), [("simple", "fit-profile.txt"), ("advanced", "fit-profile.txt"), ("pytorch", ".pt.trace.json")])
def test_profiler_output_is_kept_listed_and_linked(
    profiler: str, expected: str, make_spec: Callable[..., RunSpec], tmp_path: Path
) -> None:
    result = execute(make_spec(profiler=profiler, max_epochs=1))
    assert result.status == "ok", result.reason
    files = result.details["profile_files"]
    assert any(name.endswith(expected) for name in files), files
    assert all((tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0 for name in files)
    assert profiler in result.details["profile_note"]
    if profiler == "simple":  # the report of the training loop names Lightning's own hooks
        text = (tmp_path / next(name for name in files if name.endswith("fit-profile.txt"))).read_text()
        assert "run_training_batch" in text
    write_report(tmp_path, [result], {})
    html = (tmp_path / "report.html").read_text()
    assert f'href="{files[0]}"' in html


def test_no_profiler_no_profile_folder(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    result = execute(make_spec(max_epochs=1))
    assert "profile_files" not in result.details and not (tmp_path / "profiles").exists()


def test_weight_histograms_reach_tensorboard_once_per_epoch(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    spec = make_spec(weight_histograms=True, max_epochs=2)
    result = execute(spec)
    assert result.status == "ok", result.reason
    events = EventAccumulator(str(tmp_path / "tb" / "autoencoder" / "cpu" / "baseline"), size_guidance={HISTOGRAMS: 0})
    events.Reload()
    tags = events.Tags()[HISTOGRAMS]
    assert "weights/encoder.l1.0.weight" in tags and "weights/decoder.l1.2.bias" in tags
    steps = [event.step for event in events.Histograms("weights/encoder.l1.0.weight")]
    assert steps == [18, 36]  # one per epoch, at the optimizer step it ended on


def test_no_weight_histograms_by_default(make_spec: Callable[..., RunSpec], tmp_path: Path) -> None:
    execute(make_spec(max_epochs=1))
    events = EventAccumulator(str(tmp_path / "tb" / "autoencoder" / "cpu" / "baseline"))
    events.Reload()
    assert events.Tags()[HISTOGRAMS] == []
