"""cuDNN benchmark: let cuDNN time its convolution algorithms for each new input shape and keep the fastest.

Lightning docs: https://lightning.ai/docs/pytorch/stable/common/trainer.html#benchmark
``Trainer(benchmark=True)`` sets ``torch.backends.cudnn.benchmark``. The first batch of every new shape
pays for the timing (it lands in the warm-up blocks, and a partial last batch pays again); only
convolutions on CUDA use it, so a CPU run is skipped, not run as the baseline under another name.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import TrickSkipped
from harness.trick import Setup, Trick, register_trick


@register_trick
@dataclass
class CudnnBenchmark(Trick):
    name = "cudnn-benchmark"
    summary = "Trainer(benchmark=True): cuDNN picks the fastest convolution algorithm per input shape (CUDA only)."
    source = "https://lightning.ai/docs/pytorch/stable/common/trainer.html#benchmark"
    trainer_args = frozenset({"benchmark"})

    def apply(self, setup: Setup) -> None:
        if setup.accelerator != "gpu":
            raise TrickSkipped("cudnn-benchmark needs a CUDA GPU: cuDNN does not run on a CPU, so the row would be the baseline")
        setup.trainer_kwargs["benchmark"] = True
        setup.details["cudnn_benchmark"] = True
