"""torch.compile: the LightningModule compiled before fit, with what compiling cost kept apart.

Lightning docs: https://lightning.ai/docs/pytorch/stable/advanced/compile.html
``torch.compile(model)`` and then ``trainer.fit(model)`` is Lightning's documented way; Lightning
unwraps the compiled module and compiles its ``forward`` and its ``training_step``, ``validation_step``,
``test_step`` and ``predict_step`` (``lightning.pytorch.utilities.compile.from_compiled``, which this
trick calls itself so that the rest of the run sees a LightningModule). ``steps=training`` (the
default) then puts the evaluation steps back as they were, so that ``forward`` and ``training_step``
are compiled: a metric object in a validation step can break Dynamo outright (the CNN's torchmetrics
accuracy fails with ``InternalTorchDynamoError``, torchmetrics#1780), which would cost the row its
training measurements. ``steps=all`` keeps all of Lightning's; ``target=children`` compiles each
direct child module in place (``nn.Module.compile``) instead of the LightningModule.

Compiling happens inside the first training step (and again at the first validation, in eval mode,
and at every new shape). The harness's warm-up blocks are dropped from samples/s, so the compile
time must not hide there: the row records ``compile_s``, the first training step's time minus the
steady step time, and time to target counts it (it is part of fit). It also records how many frames
Dynamo compiled during training, the graph breaks with their reasons, the recompilations, and a
warning when Dynamo hit its recompile limit and fell back to eager. Inductor's cache is private to
the run by default (``cold_cache``; in the run's scratch folder, which the harness removes however
the run ends, harness.executors.scratch), so every repeat pays the compile a first run pays; with
``cold_cache=false`` a warm cache from an earlier run makes compile_s small.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from harness.errors import TrickSkipped
from harness.executors.scratch import scratch_prefix, worker_scratch
from harness.spec import Result
from harness.trick import Setup, Trick, add_warning, register_trick

DYNAMIC = {"auto": None, "true": True, "false": False}


def dynamo_counters() -> dict[str, Counter[str]]:
    """A copy of Dynamo's counters (``torch._dynamo.utils.counters``: frames, graph breaks, ...)."""
    from torch._dynamo.utils import counters

    return {key: Counter(value) for key, value in counters.items()}


class DynamoLog(logging.Handler):
    """Keeps Dynamo's recompilation messages (the ``recompiles`` log artifact, turned on for the run)
    and its "hit config.recompile_limit" warnings, after which that code runs eager, uncompiled."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.recompiles: list[str] = []
        self.limit_hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())[:300]
        if record.name.endswith("__recompiles"):
            self.recompiles.append(message)
        elif "recompile_limit" in message or "cache_size_limit" in message:
            self.limit_hits.append(message)


class CompileProbe(pl.Callback):
    """Times the first training step (where compiling happens) and counts what Dynamo did during fit
    (training and the validations inside it: eval mode and no_grad compile graphs of their own)."""

    def __init__(self) -> None:
        self.first_step_s: float | None = None
        self._started = 0.0
        self.before: dict[str, Counter[str]] = {}
        self.during: dict[str, Counter[str]] = {}
        self.dynamo_log = DynamoLog()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.before = dynamo_counters()
        torch._logging.set_logs(recompiles=True)  # this run's process only; also written to the run's log
        logging.getLogger("torch._dynamo").addHandler(self.dynamo_log)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.first_step_s is None:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.first_step_s is None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)  # once, inside the warm-up that is dropped anyway
            self.first_step_s = time.perf_counter() - self._started

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        after = dynamo_counters()
        self.during = {key: after.get(key, Counter()) - self.before.get(key, Counter()) for key in after}
        logging.getLogger("torch._dynamo").removeHandler(self.dynamo_log)
        torch._logging.set_logs()  # back to the defaults (and TORCH_LOGS) for validation and test


@register_trick
@dataclass
class Compile(Trick):
    name = "compile"
    summary = "torch.compile(model) before fit (Lightning's documented way); compile time, graph breaks and recompiles recorded."
    source = "https://lightning.ai/docs/pytorch/stable/advanced/compile.html"

    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    fullgraph: bool = False
    dynamic: Literal["auto", "true", "false"] = "auto"
    target: Literal["module", "children"] = "module"
    steps: Literal["training", "all"] = "training"
    backend: str = "inductor"
    cold_cache: bool = True

    def __post_init__(self) -> None:
        self._probe = CompileProbe()
        self._own_cache = ""  # a cache folder this trick made itself (no harness scratch folder): removed in record

    def apply(self, setup: Setup) -> None:
        if not hasattr(torch, "compile"):
            raise TrickSkipped(f"torch {torch.__version__} has no torch.compile (2.0+)")
        if self.cold_cache and self.backend == "inductor":  # read when inductor first compiles, in this process
            cache = self.cold_cache_dir(setup.spec.run_id)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
            os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
        options: dict[str, Any] = dict(mode=self.mode, fullgraph=self.fullgraph, dynamic=DYNAMIC[self.dynamic], backend=self.backend)
        if self.mode == "default":
            options.pop("mode")
        if self.target == "module":
            from lightning.pytorch.utilities.compile import from_compiled

            module = from_compiled(torch.compile(setup.module, **options))
            compiled = ["forward", "training_step", "validation_step", "test_step", "predict_step"]
            if self.steps == "training":
                for name in compiled[2:]:
                    setattr(module, name, module._compiler_ctx[f"original_{name}"])
                compiled = compiled[:2]
            setup.module = module
        else:
            compiled = [name for name, child in setup.module.named_children() if any(True for _ in child.parameters())]
            if not compiled:
                raise TrickSkipped("compile.target=children: the module has no child module with parameters to compile")
            for name in compiled:
                getattr(setup.module, name).compile(**options)
        setup.callbacks.append(self._probe)
        setup.details.update(
            compile_mode=self.mode, compile_fullgraph=self.fullgraph, compile_dynamic=self.dynamic,
            compile_target=self.target, compile_steps=self.steps if self.target == "module" else "", compile_backend=self.backend, compiled=compiled,
            compile_cache="private to the run (cold)" if self.cold_cache else "shared (may be warm)",
        )

    def cold_cache_dir(self, run_id: str) -> str:
        """A new, empty folder for this run's inductor and Triton caches.

        Inside the run's scratch folder, which the harness removes after the worker has ended, however
        it ended (a killed run never reaches :meth:`record`). A worker started without one (by hand)
        gets a folder of its own, removed in :meth:`record`, or, if the run is killed, by the next
        harness's sweep (the folder is named as a scratch folder of this process).
        """
        scratch = worker_scratch()
        if not scratch:
            scratch = self._own_cache = tempfile.mkdtemp(prefix=scratch_prefix(run_id))
        cache = os.path.join(scratch, "inductor")
        os.makedirs(cache, exist_ok=True)
        return cache

    def record(self, result: Result) -> None:
        """After the run: the compile time apart from steady throughput, and what Dynamo did in training."""
        if self._own_cache:
            shutil.rmtree(self._own_cache, ignore_errors=True)
        probe, details = self._probe, result.details
        during = probe.during
        frames = during.get("frames", Counter())
        details["compiled_frames_in_fit"] = int(frames.get("ok", 0))
        details["recompiles_in_fit"] = len(probe.dynamo_log.recompiles)
        if probe.dynamo_log.recompiles:
            details["recompile_reasons"] = probe.dynamo_log.recompiles[:3]
        breaks = during.get("graph_break", Counter())
        details["graph_breaks_in_fit"] = int(sum(breaks.values()))
        if breaks:
            details["graph_break_reasons"] = [f"{count}x {reason[:200]}" for reason, count in breaks.most_common(3)]
        if probe.first_step_s is not None:
            details["first_step_s"] = round(probe.first_step_s, 4)
            steady = (result.step_time_ms or 0.0) / 1000.0
            result.compile_s = max(0.0, probe.first_step_s - steady)
        if probe.dynamo_log.limit_hits:
            add_warning(details, f"compile: Dynamo hit its recompile limit, that code ran eager (uncompiled): {probe.dynamo_log.limit_hits[0]}")
        if details["compiled_frames_in_fit"] == 0:
            add_warning(details, "compile: Dynamo compiled no frame during fit: the row measures uncompiled training")
