"""The bootstrap interval on planted truth: known effects are found, no effect is not invented."""

from __future__ import annotations

import numpy as np
import pytest

from harness.measuring.stats import Interval, paired_interval, ratio, ratio_of_ratios


def simulate(rng: np.random.Generator, factor: float, repeats: int, blocks: int = 20) -> list[list[list[float]]]:
    """Baseline and trick runs as a shared machine makes them: each repeat has its own speed (run-to-run
    noise, 8%, shared by the two runs of that repeat only in part), blocks vary 3% around it."""
    arms: list[list[list[float]]] = [[], []]
    for _ in range(repeats):
        drift = rng.normal(1.0, 0.05)  # the machine's mood during this repeat, seen by both runs
        for arm, scale in enumerate((1.0, factor)):
            run_level = 1000.0 * scale * drift * rng.normal(1.0, 0.06)  # this process's own luck
            arms[arm].append(list(run_level * rng.normal(1.0, 0.03, size=blocks)))
    return arms


def test_a_slower_trick_is_found_with_the_true_factor_inside_its_interval() -> None:
    rng = np.random.default_rng(1)
    interval = paired_interval(simulate(rng, 0.7, repeats=3), ratio)
    assert interval.contains(0.7)
    assert interval.high < 1.0, f"a 0.7x trick must come out slower: {interval}"


def test_an_identical_trick_comes_out_as_no_effect_in_19_of_20_simulations() -> None:
    """The baseline under another name: 1.0 inside the interval in at least 19 of 20 seeded worlds."""
    hits = [paired_interval(simulate(np.random.default_rng(100 + s), 1.0, repeats=3), ratio).contains(1.0) for s in range(20)]
    assert sum(hits) >= 19, f"1.0 inside the interval in only {sum(hits)} of 20 simulations"


def test_blocks_alone_would_be_overconfident() -> None:
    """Why the interval comes from repeats: with the blocks of one repeat only, an identical trick is
    'found' far more often than 1 in 20 (run-to-run noise is larger than the blocks' spread), which is
    why a one-repeat interval is flagged ``blocks_only`` and verdicts on it say "cannot tell"."""
    misses = 0
    for s in range(20):
        arms = simulate(np.random.default_rng(200 + s), 1.0, repeats=1)
        interval = paired_interval(arms, ratio, seed=s)
        assert interval.blocks_only
        misses += not interval.contains(1.0)
    assert misses >= 5


def test_fidelity_of_a_faithfully_measured_trick_contains_one() -> None:
    """Harness and plain loop see the same 0.8x trick (the harness at its own, lower, speed)."""
    rng = np.random.default_rng(7)
    harness = simulate(rng, 0.8, repeats=4)
    plain = simulate(rng, 0.8, repeats=4)
    plain = [[[v * 1.3 for v in run] for run in arm] for arm in plain]  # plain PyTorch is faster overall
    interval = paired_interval([harness[0], harness[1], plain[0], plain[1]], ratio_of_ratios)
    assert interval.contains(1.0)
    distorted = [[[v * 0.7 for v in run] for run in harness[1]]]  # a harness that makes the trick look slower
    assert paired_interval([harness[0], distorted[0], plain[0], plain[1]], ratio_of_ratios).high < 1.0


def test_the_interval_keeps_its_level_with_few_repeats() -> None:
    """Over many simulated worlds, the 95% interval holds the true ratio about 95% of the time."""
    for repeats in (2, 3, 5):
        hits = sum(paired_interval(simulate(np.random.default_rng(1000 + s), 1.0, repeats), ratio).contains(1.0) for s in range(200))
        assert 0.9 <= hits / 200 <= 0.99, f"{repeats} repeats: coverage {hits / 200:.2f}"


def test_arms_must_have_the_same_repeats() -> None:
    with pytest.raises(ValueError, match="same"):
        paired_interval([[[1.0]], [[1.0], [2.0]]], ratio)
    with pytest.raises(ValueError, match="block"):
        paired_interval([[[1.0]], [[]]], ratio)


def test_describe_says_when_run_to_run_noise_is_missing() -> None:
    assert "run-to-run noise not included" in Interval(1.0, 0.9, 1.1, repeats=1).describe()
    assert "3 repeats" in Interval(1.0, 0.9, 1.1, repeats=3).describe()
