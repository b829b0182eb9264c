"""The harness adds as little as it can to each training step.

No per-step host synchronisation: every host read of a tensor (``item``, ``float``, ``bool``,
``tolist``) during training epochs is counted, validation excluded. Reads by torch's optimizers are
left out: Adam reads its CPU-side step counter every step in plain PyTorch too, and that never waits
for the device. What remains must be per block, per logging step or per epoch: far fewer than one
per training step.

No per-step hook calls it does not need: Lightning calls every per-step hook of every callback, so
the harness's observers reach it as one callback (``CallbackGroup``). The calls are counted through
Lightning's profiler interface, which wraps every callback hook call.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterator

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.profilers import PassThroughProfiler

from harness import worker
from harness.measuring.curves import ValCurve
from harness.measuring.measure import PER_STEP_HOOKS, CallbackGroup, ThroughputMeter
from harness.worker import execute

READS = ("item", "__float__", "__bool__", "tolist", "__int__")


class TrainingWindow(pl.Callback):
    """True while training batches run (validation switched off)."""

    active = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = trainer.training

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingWindow.active = False


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _original=original, _name=name, **kwargs: object) -> object:
            if TrainingWindow.active:
                caller = traceback.extract_stack(limit=3)[0].filename
                if "torch/optim/" not in caller:
                    counts[f"{_name} {caller.rsplit('site-packages/', 1)[-1]}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield counts
    TrainingWindow.active = False


def test_host_reads_happen_per_block_not_per_step(make_spec, host_reads: collections.Counter[str]) -> None:
    block_steps = 6
    result = execute(make_spec(max_epochs=2, block_steps=block_steps), extra_callbacks=[TrainingWindow()])
    assert result.status == "ok", result.reason
    steps, epochs = result.steps, result.epochs
    assert steps == 36
    budget = 2 * steps // block_steps + 2 * epochs  # block edges + logger writes + epoch ends
    assert sum(host_reads.values()) <= budget, host_reads
    assert sum(host_reads.values()) > 0  # the probe does see the reads that do happen


class HookCalls(PassThroughProfiler):
    """Counts Lightning's callback hook calls by hook name (the profiler sees ``[Callback]<key>.<hook>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def start(self, action_name: str) -> None:
        if action_name.startswith("[Callback]"):
            self.calls[action_name.rsplit(".", 1)[-1]] += 1


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch) -> HookCalls:
    profiler = HookCalls()
    monkeypatch.setattr(worker, "make_profiler", lambda *args: profiler)
    return profiler


def test_the_harness_is_one_callback_per_step_without_checkpoints(make_spec, hook_calls: HookCalls) -> None:
    """The meter, the validation curve and the contention monitor cost one dispatch per hook, not three."""
    result = execute(make_spec(checkpoints=False))
    assert result.status == "ok", result.reason
    assert result.steps == 36
    for hook in PER_STEP_HOOKS:
        assert hook_calls.calls[hook] == result.steps, (hook, hook_calls.calls)
    assert result.curve and result.samples_per_s and "foreign_cpu_share" in result.details  # the group forwarded


def test_checkpoint_callbacks_add_no_per_step_work_of_their_own(
    make_spec, hook_calls: HookCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """best and last are the only other callbacks per step (the monitor guard lives in best), and their
    state keys, which Lightning formats for every hook call, are formatted once, not per step."""
    formatted = collections.Counter()
    generate = pl.Callback._generate_state_key

    def counted(self: pl.Callback, **kwargs: object) -> str:
        formatted[type(self).__name__] += 1
        return generate(self, **kwargs)

    monkeypatch.setattr(pl.Callback, "_generate_state_key", counted)
    result = execute(make_spec(checkpoints=True))
    assert result.status == "ok", result.reason
    assert set(result.checkpoints) == {"best", "last"}
    for hook in PER_STEP_HOOKS:
        assert hook_calls.calls[hook] == 3 * result.steps, (hook, hook_calls.calls)
    assert sum(formatted.values()) < result.steps, formatted


def test_callback_group_forwards_in_order_and_refuses_what_it_cannot_forward() -> None:
    seen: list[str] = []

    class First(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append("first")

    class Second(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen.append("second")

    class PerStep(pl.Callback):
        def on_before_zero_grad(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: object) -> None:
            pass

    group = CallbackGroup(First(), pl.Callback(), Second())
    group.on_train_start(None, None)  # type: ignore[arg-type]
    group.on_train_end(None, None)  # type: ignore[arg-type]  # nobody overrides it: nothing to call
    assert seen == ["first", "second"]
    with pytest.raises(ValueError, match="PerStep overrides on_before_zero_grad"):
        CallbackGroup(PerStep())
    meter = ThroughputMeter()
    CallbackGroup(meter, ValCurve(meter.timer))  # the harness's own observers fit
