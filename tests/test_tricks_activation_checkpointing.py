"""activation-checkpointing: the named blocks' forward runs again in backward (recomputed, not kept),
the loss is the same as without it, and a workload without blocks is skipped with the reason."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from harness.worker import execute

TINY_TRANSFORMER = {"sequences": "640", "seq_len": "16", "d_model": "32", "heads": "2", "layers": "2"}


class ForwardCalls(pl.Callback):
    """Calls of a layer inside the first transformer block while training (a forward hook: it fires in
    forward and again when backward recomputes the block), and the training steps."""

    def __init__(self) -> None:
        self.calls = 0
        self.steps = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if module.training:
                self.calls += 1

        pl_module.model.blocks.layers[0].linear1.register_forward_hook(count)

    def on_train_batch_end(self, *args: Any) -> None:
        self.steps += 1


def _run(make_spec, tricks: list[str], seen: pl.Callback | None = None):
    spec = make_spec(tricks, workload="transformer", workload_params=TINY_TRANSFORMER, max_epochs=1)
    return execute(spec, extra_callbacks=[seen] if seen else [])


def test_blocks_are_recomputed_in_backward_and_train_to_the_same_loss(make_spec) -> None:
    on, off = ForwardCalls(), ForwardCalls()
    with_ckpt = _run(make_spec, ["activation-checkpointing"], on)
    without = _run(make_spec, [], off)
    assert with_ckpt.status == without.status == "ok", (with_ckpt.reason, without.reason)
    assert with_ckpt.details["checkpointed_blocks"] == ["model.blocks.layers.0", "model.blocks.layers.1"]
    assert off.calls == off.steps and on.calls == 2 * on.steps  # forward, then once more in backward
    assert math.isclose(with_ckpt.val_loss, without.val_loss, rel_tol=1e-5)


def test_the_autoencoder_names_no_blocks_and_is_skipped(make_spec) -> None:
    result = execute(make_spec(["activation-checkpointing"], max_epochs=1))
    assert result.status == "skipped" and "names no blocks to checkpoint" in result.reason
