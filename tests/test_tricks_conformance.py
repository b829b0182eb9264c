"""Every registered trick, the same checks: it is described, its parameters work from the CLI, and
a tiny CPU run either succeeds or is skipped with a reason. A new trick is tested without editing this file."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from harness.trick import TRICKS, Trick
from harness.worker import execute

ALL_TRICKS = TRICKS.names()


def test_the_issue_s_tricks_are_all_registered() -> None:
    expected = {
        "lr-finder", "batch-size-finder", "16-mixed", "bf16-mixed", "bf16-true",
        "swa", "early-stopping", "grad-clipping", "grad-accumulation",
    }
    assert expected <= set(ALL_TRICKS)


@pytest.mark.parametrize("name", ALL_TRICKS)
def test_trick_is_described_and_its_defaults_survive_the_cli(name: str) -> None:
    cls: type[Trick] = TRICKS.get(name)
    assert cls.summary and cls.source.startswith("https://")
    defaults = cls.parameters()
    # Every parameter has a default, and "--param NAME.FIELD=<default as printed>" gives it back.
    assert all(default is not dataclasses.MISSING for default in defaults.values())
    assert dataclasses.asdict(cls.from_params({k: str(v) for k, v in defaults.items()})) == defaults
    hints = typing.get_type_hints(cls)
    assert all(hints[key] is not typing.Any for key in defaults)


@pytest.mark.parametrize("name", ALL_TRICKS)
def test_tiny_cpu_run_succeeds_or_is_skipped_with_a_reason(name: str, make_spec) -> None:
    result = execute(make_spec([name], max_epochs=1))
    assert result.status in ("ok", "skipped"), f"{name}: {result.status}: {result.reason}"
    if result.status == "skipped":
        assert len(result.reason) > 20, "a skip must say why"
        assert result.steps is None  # nothing ran under a misleading label
    else:
        assert result.steps and result.val_loss is not None and result.samples_per_s
    assert "Traceback" not in result.reason
