"""channels_last: NHWC memory format for the module and its 4-D input batches.

PyTorch tutorial: https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html
Convolutions on tensor cores (and oneDNN on CPUs) prefer NHWC; ``module.to(memory_format=
torch.channels_last)`` converts the 4-D weights, and each batch's 4-D tensors are converted after
they reach the device, in the datamodule's ``on_after_batch_transfer`` hook (Lightning's place for
that). A module without a 2-D convolution (the autoencoder's linear layers, the transformer) has
nothing that NHWC changes: its run is skipped with the reason before it starts (the autoencoder's
(N, 1, 28, 28) images would convert, and change nothing); batches with no 4-D tensor skip it at the
first batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick


def to_channels_last(batch: Any) -> tuple[Any, int]:
    """The batch with its 4-D tensors in channels_last, and how many there were."""
    if isinstance(batch, torch.Tensor):
        return (batch.contiguous(memory_format=torch.channels_last), 1) if batch.dim() == 4 else (batch, 0)
    if isinstance(batch, (list, tuple)):
        converted = [to_channels_last(item) for item in batch]
        return type(batch)(item for item, _ in converted), sum(count for _, count in converted)
    if isinstance(batch, dict):
        converted_items = {key: to_channels_last(value) for key, value in batch.items()}
        return {key: item for key, (item, _) in converted_items.items()}, sum(count for _, count in converted_items.values())
    return batch, 0


@register_trick
@dataclass
class ChannelsLast(Trick):
    name = "channels-last"
    summary = "module.to(memory_format=torch.channels_last) and 4-D batches in NHWC; skipped for a module without a 2-D convolution."
    source = "https://pytorch.org/tutorials/intermediate/memory_format_tutorial.html"

    def apply(self, setup: Setup) -> None:
        if not any(isinstance(layer, torch.nn.Conv2d) for layer in setup.module.modules()):
            raise TrickSkipped("channels-last: the module has no 2-D convolution, so NHWC changes nothing it computes")
        setup.module = setup.module.to(memory_format=torch.channels_last)
        datamodule, details = setup.datamodule, setup.details
        original = datamodule.on_after_batch_transfer

        def on_after_batch_transfer(batch: Any, dataloader_idx: int) -> Any:
            batch, count = to_channels_last(original(batch, dataloader_idx))
            if count == 0:
                raise TrickSkipped("channels-last: the batches have no 4-D (N, C, H, W) tensor to put in channels_last")
            details["channels_last_tensors_per_batch"] = count
            return batch

        datamodule.on_after_batch_transfer = on_after_batch_transfer  # Lightning calls the datamodule's hook
        details["channels_last"] = "module weights and 4-D batch tensors"
