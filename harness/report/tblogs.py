"""Read the loss curves back from a run's TensorBoard event files.

The worker's TensorBoardLogger writes each run under ``tb/<workload>/<accelerator>/<trick>[-r<repeat>]``
(so ``tensorboard --logdir <run>/tb`` shows every run side by side). Lightning starts one event file
per Trainer entry point in that folder: ``fit`` first (``train_loss`` every ``log_every_n_steps``,
``val_loss`` at each validation), then ``validate`` and ``test`` (one point each, on the final
weights). The curves are the ``fit`` file's; the later files would add a duplicate last val point.
Read with tensorboard's own ``EventAccumulator``, as the Lightning tutorial does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from harness.errors import UserError
from harness.runfolder.rundir import inside_run_dir
from harness.spec import Result, path_safe

CURVE_TAGS = ("train_loss", "val_loss")
_EVENT_FILE = re.compile(r"events\.out\.tfevents\.(\d+)\..*?(?:\.(\d+))?$")


def tb_version_dir(run_dir: Path, result: Result) -> Path:
    """Where the worker's TensorBoardLogger wrote this result's events: ``details["tb_dir"]`` (relative
    to the run) when the worker recorded it, else the layout of ``harness.worker.base_trainer_kwargs``."""
    recorded = result.details.get("tb_dir")
    if isinstance(recorded, str) and recorded:
        relative: str | Path = recorded
    else:
        version = result.trick if result.repeat == 0 else f"{result.trick}-r{result.repeat}"
        relative = Path("tb") / path_safe(result.workload) / result.accelerator / version
    try:  # a row's values may be crafted: read no events from outside the run folder
        return inside_run_dir(run_dir, relative, "TensorBoard folder")
    except UserError:
        return run_dir / "tb" / "(outside the run folder)"


def _file_order(path: Path) -> tuple[int, int, str]:
    """Creation order of event files: the timestamp in the name, then the writer's counter suffix."""
    match = _EVENT_FILE.match(path.name)
    if not match:
        return (0, 0, path.name)
    return (int(match.group(1)), int(match.group(2) or 0), path.name)


def event_files(version_dir: Path) -> list[Path]:
    return sorted((p for p in version_dir.glob("events.out.tfevents.*") if p.is_file()), key=_file_order)


def read_scalars(path: Path, tags: tuple[str, ...] = CURVE_TAGS) -> dict[str, pd.DataFrame]:
    """Every point of each wanted scalar tag in one event file (or folder): columns step, value."""
    accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0})  # 0: keep every point
    accumulator.Reload()
    available = set(accumulator.Tags().get("scalars", []))
    return {
        tag: pd.DataFrame(
            [(event.step, event.value) for event in accumulator.Scalars(tag)], columns=["step", "value"]
        )
        for tag in tags
        if tag in available
    }


def fit_curves(version_dir: Path, tags: tuple[str, ...] = CURVE_TAGS) -> dict[str, pd.DataFrame]:
    """The ``fit`` phase's curves of one run: the first event file that holds any of ``tags``.

    Empty when the folder or its events are missing (a skipped run, a crash, a run from before TB logging).
    """
    if not version_dir.is_dir():
        return {}
    for path in event_files(version_dir):
        try:
            curves = read_scalars(path, tags)
        except Exception:  # a truncated event file (a killed run) must not break the report
            continue
        if curves:
            return curves
    return {}
