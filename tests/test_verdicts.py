"""The verdict engine on planted truth: synthetic rows whose right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.report.verdicts import (
    CANNOT_TELL, HURTS, NO_GAIN, TURN_ON, TURN_ON_IF, judge, verdict_frame, verdicts_text, with_verdicts,
)
from harness.report.table import summary_frame
from harness.spec import BASELINE, Result

BATCH = 64


def row(trick: str, repeat: int, speed: float, rng: np.random.Generator | None = None, *, blocks: int = 30,
        block_noise: float = 0.03, mem: float = 500e6, val: float = 0.10, status: str = "ok", reason: str = "",
        curve: list[dict] | None = None, tune_s: float = 0.0, wall_s: float = 10.0, warnings: list[str] | None = None,
        step_time_scale: float = 1.0) -> Result:
    """One run: ``blocks`` timing blocks around ``speed`` samples/s, enough timed seconds to be judged."""
    rng = rng or np.random.default_rng(repeat)
    rates = list(speed * np.exp(rng.normal(0.0, block_noise, size=blocks)))
    steps = 400
    step_ms = 1000.0 * BATCH / speed * step_time_scale
    return Result(
        run_id=f"ae-cpu-{trick}-r{repeat}", trick=trick, workload="ae", dataset="digits", accelerator="cpu",
        repeat=repeat, status=status, reason=reason, batch_size=BATCH,
        samples_per_s=float(np.median(rates)) if status == "ok" else None,
        step_time_ms=step_ms if status == "ok" else None, steps=steps if status == "ok" else None,
        blocks_measured=blocks if status == "ok" else None,
        block_samples_per_s=rates if status == "ok" else [],
        peak_mem_bytes=int(mem) if status == "ok" else None, mem_kind="max_rss",
        val_loss=val if status == "ok" else None, test_loss=val if status == "ok" else None,
        wall_s=wall_s, fit_s=wall_s - 1, tune_s=tune_s, epochs=10,
        curve=curve or [], details={"warnings": warnings} if warnings else {},
    )


def world(seed: int, factors: dict[str, float], repeats: int = 3, run_noise: float = 0.05,
          block_noise: float = 0.03) -> list[Result]:
    """A simulated invocation: every run's speed drifts by log-normal run-to-run noise of ``run_noise``
    (independently per run: the worst case for a paired design), and ``factors`` plant each trick's
    true effect on throughput."""
    rng = np.random.default_rng(seed)
    rows = []
    for repeat in range(repeats):
        for trick, factor in {BASELINE: 1.0, **factors}.items():
            speed = 10_000.0 * factor * math.exp(rng.normal(0.0, run_noise))
            rows.append(row(trick, repeat, speed, rng, block_noise=block_noise))
    return rows


def by_trick(verdicts):
    return {v.trick: v for v in verdicts}


def test_a_trick_planted_0_7x_slower_hurts_with_0_7_inside_its_interval() -> None:
    verdict = by_trick(judge(world(1, {"slow": 0.7}), changes_budget=()))["slow"]
    assert verdict.speed.call == "slower"
    assert verdict.speed.low <= 0.7 <= verdict.speed.high
    assert verdict.category == HURTS
    assert "0.7" in verdict.text and "95% CI" in verdict.text and "3 repeats" in verdict.text


def test_a_trick_planted_0_7x_slower_keeps_0_7_in_its_interval_in_most_worlds() -> None:
    covered = sum(
        by_trick(judge(world(seed, {"slow": 0.7}), changes_budget=()))["slow"].speed.low <= 0.7
        <= by_trick(judge(world(seed, {"slow": 0.7}), changes_budget=()))["slow"].speed.high
        for seed in range(20)
    )
    assert covered >= 18  # a 95% interval: about 19 of 20


@pytest.mark.parametrize(("repeats", "run_noise"), [(3, 0.01), (5, 0.03)])
def test_an_identical_trick_shows_no_speed_effect_in_19_of_20_worlds(repeats: int, run_noise: float) -> None:
    """The baseline under another name: "no speed effect" (its interval inside 1/1.1-1.1) and "no gain here"."""
    calls = [by_trick(judge(world(seed, {"same": 1.0}, repeats, run_noise), changes_budget=()))["same"]
             for seed in range(20)]
    assert sum(v.speed.call == "same" and v.category == NO_GAIN for v in calls) >= 19
    assert not any(v.speed.call in ("faster", "slower") for v in calls)  # never a false effect


def test_an_identical_trick_on_a_noisy_machine_is_cannot_tell_not_a_false_effect() -> None:
    """3 repeats at 8% run-to-run noise cannot show an effect under 10% absent: "cannot tell", with more repeats."""
    calls = [by_trick(judge(world(seed, {"same": 1.0}, 3, 0.08), changes_budget=()))["same"] for seed in range(20)]
    assert sum(v.speed.call in ("faster", "slower") for v in calls) <= 1
    unclear = [v for v in calls if v.speed.call == "unclear"]
    assert unclear and all(v.category == CANNOT_TELL and ("--repeats" in v.text or "30 repeats" in v.text) for v in unclear)


def test_a_faster_trick_with_the_same_loss_and_less_memory_is_turned_on() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for repeat, drift in enumerate([1.0, 0.95, 1.04]):
        rows.append(row(BASELINE, repeat, 10_000 * drift, rng, mem=600e6, val=0.100))
        rows.append(row("bf16", repeat, 13_800 * drift * (1 + 0.01 * (repeat - 1)), rng, mem=500e6, val=0.1002))
    verdict = by_trick(judge(rows, changes_budget=()))["bf16"]
    assert verdict.category == TURN_ON and verdict.speed.call == "faster"
    assert verdict.speed.low <= 1.38 <= verdict.speed.high
    assert verdict.memory.call == "lower" and verdict.memory.ratio == pytest.approx(500 / 600)
    assert verdict.quality.call == "same"
    assert verdict.text.startswith("turn on: 1.3") and "peak memory 0.83x" in verdict.text and "val loss same (+0.2%)" in verdict.text


def test_a_too_short_window_is_cannot_tell_naming_blocks_seconds_and_a_budget() -> None:
    rows = [row(BASELINE, 0, 10_000, blocks=4), row("fast", 0, 20_000, blocks=4)]
    verdict = by_trick(judge(rows, changes_budget=()))["fast"]
    assert verdict.category == CANNOT_TELL and verdict.speed.call == "short"
    assert math.isnan(verdict.speed.ratio)
    assert "measured window too short for a throughput ratio (4 blocks" in verdict.text and "--max-epochs" in verdict.text
    # enough blocks but under a second of timed training: short too
    rows = [row(BASELINE, 0, 10_000, step_time_scale=0.01), row("fast", 0, 20_000, step_time_scale=0.01)]
    verdict = by_trick(judge(rows, changes_budget=()))["fast"]
    assert verdict.speed.call == "short" and " s per run)" in verdict.text


@pytest.mark.parametrize("repeats", [1, 2])
def test_fewer_than_3_repeats_with_a_huge_effect_still_get_a_call(repeats: int) -> None:
    rows = world(3, {"huge": 0.3, "small": 0.93}, repeats=repeats, run_noise=0.02)
    verdicts = by_trick(judge(rows, changes_budget=()))
    assert verdicts["huge"].speed.call == "slower" and verdicts["huge"].category == HURTS
    assert verdicts["small"].speed.call != "slower"  # a 7% effect is no call on so few repeats
    if repeats == 1:
        assert verdicts["small"].category == CANNOT_TELL and "--repeats 3" in verdicts["small"].text
        assert "1 repeat, blocks only" in verdicts["huge"].text


def test_a_budget_changing_trick_is_judged_on_time_to_target_not_samples_per_s() -> None:
    """SWA-like: 0.8x the samples/s, but it reaches the baseline's final val loss in 0.6x its time."""
    def curve(losses, seconds_per_epoch):
        return [{"epoch": e, "step": 10 * (e + 1), "samples": 640 * (e + 1), "fit_s": seconds_per_epoch * (e + 1),
                 "val_loss": loss} for e, loss in enumerate(losses)]

    rows = []
    for repeat, drift in enumerate([1.0, 1.03, 0.98]):
        rows.append(row(BASELINE, repeat, 10_000 * drift, val=0.10,
                        curve=curve([0.3, 0.2, 0.15, 0.12, 0.10], 1.0 * drift)))
        rows.append(row("swa", repeat, 8_000 * drift, val=0.09,
                        curve=curve([0.25, 0.10, 0.095, 0.09, 0.09], 1.5 * drift)))
    verdict = by_trick(judge(rows, changes_budget={"swa"}))["swa"]
    assert verdict.judged_on == "time to target"
    assert verdict.to_target.call == "sooner" and verdict.to_target.ratio == pytest.approx(0.6, rel=0.02)
    assert verdict.category == TURN_ON
    assert "reached the baseline's val loss in 0.60x its time" in verdict.text
    # the same rows judged on throughput alone would have called it slower
    assert by_trick(judge(rows, changes_budget=()))["swa"].speed.call == "slower"


def test_a_budget_trick_that_never_reaches_the_target_and_loses_quality_hurts() -> None:
    rows = []
    for repeat in range(3):
        rows.append(row(BASELINE, repeat, 10_000, val=0.10, curve=[{"fit_s": 2.0, "samples": 1000, "val_loss": 0.10}]))
        rows.append(row("lr-finder", repeat, 10_000, val=0.45, curve=[{"fit_s": 2.0, "samples": 1000, "val_loss": 0.45}]))
    verdict = by_trick(judge(rows, changes_budget={"lr-finder"}))["lr-finder"]
    assert verdict.category == HURTS and verdict.to_target.call == "never"
    assert "never reached the baseline's val loss" in verdict.text and "val loss 4.5x (worse)" in verdict.text


def test_a_faster_trick_with_a_worse_loss_is_turn_on_if_that_loss_is_acceptable() -> None:
    rows = []
    for repeat, drift in enumerate([1.0, 1.02, 0.97]):
        rows += [row(BASELINE, repeat, 10_000 * drift, val=0.10), row("accum", repeat, 15_000 * drift, val=0.12)]
    verdict = by_trick(judge(rows, changes_budget=()))["accum"]
    assert verdict.category == TURN_ON_IF and "+20.0% loss" in verdict.call


def test_failed_and_skipped_tricks_say_so_with_their_reason() -> None:
    rows = [row(BASELINE, 0, 10_000), row("16-mixed", 0, 1, status="skipped", reason="16-mixed needs a GPU"),
            row("boom", 0, 1, status="failed", reason="non-finite loss at step 3")]
    verdicts = by_trick(judge(rows, changes_budget=()))
    assert verdicts["16-mixed"].category == "skipped" and verdicts["16-mixed"].text == "skipped: 16-mixed needs a GPU"
    assert verdicts["boom"].category == "failed" and "non-finite loss" in verdicts["boom"].text


def test_contention_warnings_are_named_and_an_idle_machine_is_suggested() -> None:
    warning = "other processes used 40% of the machine's CPU time during fit: ..."
    rows = []
    for repeat, drift in enumerate([1.0, 0.7, 1.2]):
        rows += [row(BASELINE, repeat, 10_000 * drift, warnings=[warning]), row("x", repeat, 10_000 / drift)]
    verdict = by_trick(judge(rows, changes_budget=()))["x"]
    assert verdict.category == CANNOT_TELL and verdict.contention == 3
    assert "contention warnings on 3 of 6 runs" in verdict.text and "an idle machine" in verdict.text


def test_the_summary_carries_the_verdict_columns() -> None:
    rows = world(1, {"slow": 0.7})
    verdicts = judge(rows, changes_budget=())
    summary = with_verdicts(summary_frame(rows), verdicts)
    slow = summary[summary["trick"] == "slow"].iloc[0]
    assert slow["verdict_category"] == HURTS and slow["speed_low"] <= 0.7 <= slow["speed_high"]
    assert slow["verdict"].startswith("hurts here: ")
    assert summary[summary["trick"] == BASELINE]["verdict"].isna().all()  # the baseline is what others are judged by
    assert list(verdict_frame(verdicts)["trick"]) == ["slow"]
    text = verdicts_text(verdicts)
    assert text.splitlines()[0].startswith("Verdicts") and "ae on cpu, dataset digits" in text and "  slow  hurts here" in text


def test_the_html_section_escapes_names_and_reasons() -> None:
    from harness.report.verdicts import verdicts_html

    rows = [row(BASELINE, 0, 10_000), row("<script>x</script>", 0, 1, status="failed", reason='<img src=x onerror="y">')]
    page = verdicts_html(judge(rows, changes_budget=()))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "&lt;img src=x onerror=&quot;y&quot;&gt;" in page


def test_the_plan_shuffles_baseline_and_tricks_within_each_repeat_reproducibly() -> None:
    from harness.runfolder.plan import RunOptions, plan_runs

    options = RunOptions(dataset="digits", dataset_reason="", data_dir="d", loader="device", batch_size=64, lr=1e-3,
                         max_epochs=1, max_steps=-1, seed=42, block_steps=10, warmup_blocks=1, synthetic_size=64,
                         num_workers=0)
    tricks = [["grad-clipping"], ["swa"], ["bf16-mixed"], ["early-stopping"]]

    def orders(seed):
        specs = plan_runs(tricks, ["autoencoder"], ["cpu"], 6, options, {}, "run", order_seed=seed)
        return [[s.label for s in specs if s.repeat == r] for r in range(6)]

    shuffled = orders(42)
    assert shuffled == orders(42)  # the same seed, the same order (resume follows plan.json's order anyway)
    assert all(sorted(o) == sorted(["baseline", "grad-clipping", "swa", "bf16-mixed", "early-stopping"]) for o in shuffled)
    assert len({o.index("baseline") for o in shuffled}) > 1  # the baseline does not always run first
    assert shuffled != orders(7)
    unshuffled = orders(None)
    assert all(o[0] == "baseline" for o in unshuffled)


def test_a_repeat_that_failed_is_named_and_the_rest_still_judged() -> None:
    rows = world(2, {"slow": 0.5}, repeats=3, run_noise=0.02)
    rows = [r for r in rows if not (r.trick == "slow" and r.repeat == 2)]
    rows.append(row("slow", 2, 1, status="failed", reason="timed out after 60 s"))
    verdict = by_trick(judge(rows, changes_budget=()))["slow"]
    assert verdict.repeats == 2 and verdict.speed.call == "slower"
    assert "(1 of 3 runs failed: timed out after 60 s)" in verdict.text


def test_no_gain_for_a_trick_that_pays_elsewhere_becomes_turn_on_if_its_condition() -> None:
    rows = world(4, {"grad-clipping": 1.0}, repeats=5, run_noise=0.01)
    verdict = by_trick(judge(rows, changes_budget=(), helps_when={"grad-clipping": "training is unstable"}))["grad-clipping"]
    assert verdict.category == TURN_ON_IF and verdict.call == "turn on if training is unstable"
    assert verdict.text.startswith("turn on if training is unstable: no gain in this run: no speed effect (")
    # the registry's own: grad-clipping declares it
    assert "unstable" in by_trick(judge(rows))["grad-clipping"].call
