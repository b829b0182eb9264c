"""Which device a row ran on, as every comparison groups rows: a trick is judged only against a
baseline measured on the same device name.

A Ray sweep over a cluster of mixed GPUs (or CPUs) yields rows of one cell from several device
models; a ratio across models would measure the hardware, not the trick. So the report's groups,
ratios, verdicts, time to target, Pareto fronts and ``compare`` all key on (workload, dataset,
accelerator, device_name). A row with no device name (a run that died before its worker named the
device) takes its cell's device when the cell has only one, so that a single-machine run groups as
before; in a mixed cell it stays unnamed, in a group of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from harness.spec import Result

UNKNOWN_DEVICE = ""


def _device_names(results: Iterable[Result], unnamed: bool) -> dict[tuple[str, str, str], set[str]]:
    """Per (workload, dataset, accelerator): the device names of its rows (``unnamed``: "" counts too)."""
    names: dict[tuple[str, str, str], set[str]] = {}
    for result in results:
        if result.device_name or unnamed:
            names.setdefault((result.workload, result.dataset, result.accelerator), set()).add(result.device_name or UNKNOWN_DEVICE)
    return names


def with_devices(results: Iterable[Result]) -> list[Result]:
    """The rows, each with the device name it is grouped by (copies where one was filled in)."""
    results = list(results)
    names = _device_names(results, unnamed=False)
    out = []
    for result in results:
        if not result.device_name:
            found = names.get((result.workload, result.dataset, result.accelerator), set())
            result = dataclasses.replace(result, device_name=next(iter(found)) if len(found) == 1 else UNKNOWN_DEVICE)
        out.append(result)
    return out


def several_devices(results: Iterable[Result]) -> set[tuple[str, str, str]]:
    """The (workload, dataset, accelerator) cells measured on more than one device name: where headings
    and file names must name the device to tell the groups apart."""
    return {key for key, found in _device_names(results, unnamed=True).items() if len(found) > 1}
