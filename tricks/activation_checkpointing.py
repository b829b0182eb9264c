"""Activation checkpointing: keep fewer activations in forward and recompute them in backward.

PyTorch docs: https://pytorch.org/docs/stable/checkpoint.html
Each block the workload names (``Workload.checkpoint_blocks``: the transformer's blocks, the CNN's
convolutional stack) runs under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` while
training: its inner activations are dropped after forward and recomputed in backward (dropout masks
reproduced, ``preserve_rng_state``). The point is memory: the row's peak memory against the
baseline's, at the price of about one more forward of those blocks per step; combined with the batch
size finder (``activation-checkpointing+batch-size-finder``) it shows the batch that then fits. A
workload that names no blocks (the autoencoder, an imported module) is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick


def checkpointed(block: torch.nn.Module) -> Callable[..., Any]:
    """``block.forward``, recomputed in backward when it runs with gradients in training mode."""
    forward = block.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        if block.training and torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


@register_trick
@dataclass
class ActivationCheckpointing(Trick):
    name = "activation-checkpointing"
    summary = "torch.utils.checkpoint (non-reentrant) around the workload's blocks: activations recomputed in backward, less memory."
    source = "https://pytorch.org/docs/stable/checkpoint.html"

    def apply(self, setup: Setup) -> None:
        from harness.workload import WORKLOADS

        if ":" in setup.spec.workload:
            raise TrickSkipped("activation-checkpointing: an imported module names no blocks to checkpoint (Workload.checkpoint_blocks)")
        workload = WORKLOADS.get(setup.spec.workload).from_params(setup.spec.workload_params)
        blocks = workload.checkpoint_blocks(setup.module)
        if not blocks:
            raise TrickSkipped(f"activation-checkpointing: workload {setup.spec.workload!r} names no blocks to checkpoint")
        for _, block in blocks:
            block.forward = checkpointed(block)  # nn.Module.__call__ runs the instance's forward
        setup.details["checkpointed_blocks"] = [name for name, _ in blocks]
