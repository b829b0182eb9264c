"""The order check: does a run's position in its repeat show in its speed? Tested on planted truth."""

from __future__ import annotations

import random

from harness.report.order import order_check_text, position_in_repeat, relative_speeds
from harness.spec import Result

TRICKS = ["baseline", *"abcdefghijkl"]  # 13 arms, about the main job's


def simulated_runs(first_factor: float, repeats: int = 5, noise: float = 0.01, seed: int = 0) -> list[Result]:
    """Runs in a shuffled order per repeat, each at its trick's speed x noise, the first of each repeat
    x ``first_factor``; a skipped row leads every repeat (it trains nothing, so it is nobody's first)."""
    rng = random.Random(seed)
    speed = {trick: 1000.0 * (1 + i / 10) for i, trick in enumerate(TRICKS)}
    rows = []
    for repeat in range(repeats):
        rows.append(Result(run_id=f"skip-r{repeat}", trick="skipped-one", workload="w", dataset="d",
                           accelerator="cpu", repeat=repeat, status="skipped"))
        order = TRICKS[:]
        rng.shuffle(order)
        for position, trick in enumerate(order):
            factor = first_factor if position == 0 else 1.0
            rows.append(Result(run_id=f"{trick}-r{repeat}", trick=trick, workload="w", dataset="d", accelerator="cpu",
                               repeat=repeat, status="ok", samples_per_s=speed[trick] * factor * rng.gauss(1.0, noise)))
    return rows


def test_positions_count_only_runs_that_trained() -> None:
    runs = simulated_runs(1.0, repeats=2)
    positions = position_in_repeat(runs)
    assert "skip-r0" not in positions
    assert sorted(positions[f"{t}-r0"] for t in TRICKS) == list(range(len(TRICKS)))


def test_a_planted_slow_first_run_is_found_and_none_is_not_invented() -> None:
    slow = order_check_text(simulated_runs(0.8))
    assert "first run of a repeat was slower" in slow
    first, rest = relative_speeds(simulated_runs(0.8))
    assert len(first) == 5 and len(rest) == 5 * (len(TRICKS) - 1)
    assert 0.7 < sum(first) / len(first) < 0.9
    calm = [order_check_text(simulated_runs(1.0, seed=seed)) for seed in range(20)]
    assert sum("no position effect" in text for text in calm) >= 18, calm


def test_too_few_repeats_say_so() -> None:
    assert order_check_text(simulated_runs(1.0, repeats=1)).startswith("Order check: too few repeated runs")
