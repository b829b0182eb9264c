"""The trick registry: globs, unknown names, combinations, parameters and entry-point plugins."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.registry import Registry
from harness.runfolder.plan import parse_params, parse_tricks
from harness.trick import TRICKS


def test_all_selects_every_registered_trick_in_name_order() -> None:
    names = TRICKS.names()
    assert {"grad-clipping", "grad-accumulation"} <= set(names)
    assert TRICKS.select("all") == names == sorted(names)


def test_glob_and_comma_list_keep_the_order_given_and_drop_duplicates() -> None:
    assert TRICKS.select("grad-*") == ["grad-accumulation", "grad-clipping"]
    assert TRICKS.select("grad-clipping, grad-accumulation,grad-clipping") == ["grad-clipping", "grad-accumulation"]


def test_unknown_name_names_it_and_the_closest_matches() -> None:
    with pytest.raises(UserError) as error:
        TRICKS.select("grad-clip")
    message = str(error.value)
    assert "'grad-clip'" in message and "grad-clipping" in message and "python -m harness list" in message
    assert "\n" not in message


def test_glob_matching_nothing_is_an_error() -> None:
    with pytest.raises(UserError, match=re.escape("no trick matches 'nothing-*'")):
        TRICKS.select("nothing-*")


def test_combinations_become_one_run_and_baseline_is_implicit() -> None:
    assert parse_tricks("baseline,grad-clipping+grad-accumulation,grad-clipping") == [
        ["grad-clipping", "grad-accumulation"],
        ["grad-clipping"],
    ]
    assert parse_tricks("none") == []
    with pytest.raises(UserError, match="twice"):
        parse_tricks("grad-clipping+grad-clipping")
    with pytest.raises(UserError, match="unknown trick 'nope'"):
        parse_tricks("grad-clipping+nope")


def test_params_are_typed_and_checked() -> None:
    params = parse_params(["grad-clipping.value=0.5", "grad-accumulation.k=8", "transformer.d_model=64"])
    assert params.tricks == {"grad-clipping": {"value": "0.5"}, "grad-accumulation": {"k": "8"}}
    assert params.workloads == {"transformer": {"d_model": "64"}}
    with pytest.raises(UserError, match="unknown trick or workload 'transfomer'; did you mean transformer"):
        parse_params(["transfomer.d_model=64"])
    with pytest.raises(UserError, match="divisible by heads"):
        parse_params(["transformer.d_model=30"])
    trick = TRICKS.get("grad-clipping").from_params({"value": "0.5", "algorithm": "value"})
    assert trick.value == 0.5 and trick.algorithm == "value"
    with pytest.raises(UserError, match="'vale'.*value"):
        parse_params(["grad-clipping.vale=1"])
    with pytest.raises(UserError, match="not a valid float"):
        parse_params(["grad-clipping.value=big"])
    with pytest.raises(UserError, match="use any of: norm, value"):
        parse_params(["grad-clipping.algorithm=l1"])
    with pytest.raises(UserError, match="must be > 0"):
        parse_params(["grad-clipping.value=-1"])
    with pytest.raises(UserError, match="NAME.PARAMETER=VALUE"):
        parse_params(["grad-clipping=1"])


def test_registering_a_second_class_under_a_taken_name_fails() -> None:
    registry: Registry = Registry("thing", "tricks", "harness.test-things")

    class A:
        name = "same"

    class B:
        name = "same"

    registry.register(A)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(B)


def test_third_party_trick_registers_through_the_entry_point_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real installed distribution (a dist-info folder on sys.path) declaring harness.tricks."""
    (tmp_path / "my_bench_plugin.py").write_text(
        textwrap.dedent(
            '''
            from dataclasses import dataclass
            from harness.trick import Trick

            @dataclass
            class Nothing(Trick):
                name = "plugin-nothing"
                summary = "A third-party trick that changes nothing."
                strength: int = 3
            '''
        )
    )
    dist = tmp_path / "my_bench_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-bench-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[harness.tricks]\nplugin-nothing = my_bench_plugin:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry: Registry = Registry("trick", "tricks", "harness.tricks")
    try:
        assert "plugin-nothing" in registry.names()
        assert registry.get("plugin-nothing").parameters() == {"strength": 3}
    finally:
        sys.modules.pop("my_bench_plugin", None)


def test_broken_entry_point_names_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[harness.tricks]\nbroken = does_not_exist_anywhere:Trick\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert any(ep.name == "broken" for ep in importlib.metadata.entry_points(group="harness.tricks"))
    registry: Registry = Registry("trick", "tricks", "harness.tricks")
    with pytest.raises(UserError, match="'broken'.*failed to load"):
        registry.names()
