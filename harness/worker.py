"""One run in one fresh process: RunSpec in, Result out.

``python -m harness.worker SPEC.json RESULT.json`` is what the runner starts for every run, so no
torch state (threads, allocator, autocast, compiled kernels, seeds) leaks from one run to the next
and peak memory is this process's own. ``execute`` is the same thing in-process, for tests.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_helpers import is_overridden

from harness import env
from harness.errors import NonFiniteLoss, TrickFailed, TrickSkipped, UserError, describe, first_line
from harness.executors.lifeline import die_with_parent
from harness.measuring.budget import ValidateAtBudgetEnd
from harness.measuring.contention import ContentionMonitor, record_contention
from harness.measuring.curves import ValCurve
from harness.measuring.distributed import combine_blocks, gather_peaks, is_global_zero_env
from harness.measuring.flops import training_flops_per_batch, utilisation
from harness.measuring.histograms import WeightHistograms
from harness.measuring.measure import CallbackGroup, ThroughputMeter, batch_size_of, peak_memory, reset_peak_memory, summarise, throughput_fields
from harness.measuring.metrics import logged_name
from harness.measuring.profiling import PROFILE_NOTE, make_profiler, profile_files
from harness.refusals import refused_by_design
from harness.runfolder.checkpoints import FINAL, Checkpointing, OwnCheckpointIO, best_summary, checkpoint_dir, checkpointing, relative, resolve, saved_checkpoints
from harness.spec import Result, RunSpec, path_safe
from harness.trick import TRICKS, Setup, Trick, add_warning, check_combination
from harness.workload import WORKLOADS, Workload


def build_tricks(spec: RunSpec) -> list[Trick]:
    return [TRICKS.get(name).from_params(spec.trick_params.get(name, {})) for name in spec.tricks]


def base_trainer_kwargs(spec: RunSpec) -> dict[str, Any]:
    """The baseline Trainer every trick starts from.

    No progress bar, model summary or sanity check (they are not training); TensorBoard logs land
    under ``<run>/tb/<workload>/<accelerator>/<trick>``; metrics are flushed to the logger once per
    timing block, so the host sync that logging costs falls on a block edge. Checkpointing is on
    unless ``--no-checkpoints``; its callback is added by ``_run`` (harness.runfolder.checkpoints).
    """
    run_dir = Path(spec.run_dir)
    version = spec.label if spec.repeat == 0 else f"{spec.label}-r{spec.repeat}"
    return dict(
        accelerator=spec.accelerator,
        devices=spec.devices,
        strategy=spec.strategy,
        num_nodes=spec.num_nodes,
        max_epochs=spec.max_epochs,
        max_steps=spec.max_steps,
        precision="32-true",
        logger=TensorBoardLogger(save_dir=str(run_dir / "tb"), name=f"{path_safe(spec.workload)}/{spec.accelerator}", version=version),
        log_every_n_steps=spec.block_steps or 10,  # --block-steps auto: Lightning's default
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=spec.checkpoints,
        profiler=make_profiler(spec.profiler, run_dir, spec.run_id),
        num_sanity_val_steps=0,
        limit_val_batches=spec.limit_val_batches,
        limit_test_batches=spec.limit_test_batches,
        default_root_dir=str(run_dir),
        plugins=[OwnCheckpointIO()],  # reads the run's own checkpoints in full, any other weights-only
    )


def execute(spec: RunSpec, extra_callbacks: Sequence[pl.Callback] = ()) -> Result:
    """Run one spec and describe what happened; never raises for a failed or skipped run."""
    started = time.perf_counter()
    result = Result.for_spec(spec, "ok", device_name=env.device_name(spec.accelerator))
    result.details["dataset_reason"] = spec.dataset_reason
    try:
        _run(spec, result, extra_callbacks)
    except TrickSkipped as skipped:
        result.status, result.reason = "skipped", str(skipped)
    except NonFiniteLoss as error:
        result.status, result.reason = "failed", f"non-finite loss: {error}"
    except TrickFailed as error:
        result.status, result.reason = "failed", str(error)
    except torch.OutOfMemoryError as error:
        result.status, result.reason = "failed", f"out of memory: {str(error).splitlines()[0]}"
    except UserError as error:
        result.status, result.reason = "failed", str(error)
    except Exception as error:  # a crash in one run must not stop the others
        if spec.tricks and refused_by_design(error):  # a refusal apply() could not foresee (harness.refusals)
            result.status, result.reason = "skipped", f"{spec.label}: Lightning refuses it here: {first_line(error)}"
        else:
            traceback.print_exc()
            result.status, result.reason = "failed", describe(error, where=spec.run_dir)
    result.wall_s = time.perf_counter() - started
    return result


def _run(spec: RunSpec, result: Result, extra_callbacks: Sequence[pl.Callback]) -> None:
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    workload = WORKLOADS.get(spec.workload).from_params(spec.workload_params)
    result.dataset = workload.dataset_label(spec)
    tricks = build_tricks(spec)
    for warning in check_combination(tricks):
        add_warning(result.details, warning)
    setup = Setup(
        spec=spec,
        module=workload.build_module(spec),
        datamodule=workload.build_datamodule(spec),
        trainer_kwargs=base_trainer_kwargs(spec),
        details=result.details,
    )
    if ":" in spec.workload:  # an imported module keeps its own batch size: say which one it uses
        result.batch_size = getattr(setup.datamodule, "batch_size", None)
        result.details.update(monitor=spec.monitor, init_args=spec.init_args, datamodule_batch_size=result.batch_size)
    for trick in tricks:
        trick.apply(setup)

    meter = ThroughputMeter(spec.block_steps, spec.warmup_blocks)
    curve = ValCurve(meter.timer, fallback=spec.monitor if spec.monitor != "val_loss" else None)
    contention = ContentionMonitor()
    # one callback for Lightning to dispatch: every callback costs each training step ~8 us of hook calls
    callbacks = [*setup.callbacks, CallbackGroup(meter, curve, contention), *extra_callbacks]
    checkpoints = checkpointing(spec, has_validation=not _missing_stage(setup, "validate")) if spec.checkpoints else None
    if checkpoints is not None:
        callbacks += checkpoints.callbacks
    if spec.weight_histograms:
        callbacks.append(WeightHistograms())
    if spec.max_steps > 0:  # a step budget may end inside an epoch: validate there (harness.measuring.budget)
        callbacks.append(ValidateAtBudgetEnd())
    trainer = pl.Trainer(**setup.trainer_kwargs, callbacks=callbacks)
    result.precision = str(trainer.precision)
    result.world_size, result.strategy = trainer.world_size, type(trainer.strategy).__name__
    device = trainer.strategy.root_device

    tune_started = time.perf_counter()
    for trick in sorted(tricks, key=lambda t: t.tune_order):
        trick.tune(trainer, setup)
    result.tune_s = time.perf_counter() - tune_started

    resume_from = str(resolve(spec.run_dir, spec.resume_from)) if spec.resume_from else None
    if resume_from and _budget_spent(resume_from, spec):
        # the run finished fit before its row was lost (e.g. killed in the test phase): nothing is left
        # to continue, and a row that trained nothing measures nothing, so it trains afresh
        result.details["resume_ignored"] = f"{spec.resume_from} is at the end of the budget: trained afresh"
        resume_from = None
    if resume_from:
        result.details["resumed_from"] = spec.resume_from
    reset_peak_memory(device)
    fit_started = time.perf_counter()
    # weights_only: last.ckpt may come from a downloaded run folder (Lightning 2.6 would fully unpickle it)
    trainer.fit(setup.module, datamodule=setup.datamodule, ckpt_path=resume_from, weights_only=True if resume_from else None)
    result.fit_s = time.perf_counter() - fit_started
    fit_metrics = dict(trainer.callback_metrics)  # before validate/test replace them
    _record_contention(result, trainer, contention, device)
    _record_measurements(result, trainer, meter, curve, device)
    if result.train_loss is None:
        _logged_train_loss(result, fit_metrics)
    if spec.profiler:
        result.details["profile_note"] = PROFILE_NOTE.format(name=spec.profiler)
    _count_flops(result, workload, spec, meter.example_batch)
    result.steps = meter.timer.batches  # per rank
    result.optimizer_steps = trainer.global_step
    result.epochs = trainer.current_epoch
    result.batch_size = getattr(setup.datamodule, "batch_size", None)
    if result.batch_size is None and meter.example_batch is not None:  # a datamodule with no batch_size attribute
        result.batch_size = batch_size_of(meter.example_batch)
    _check_budget(result, spec, meter)
    result.loader = getattr(setup.datamodule, "loader_used", spec.loader)
    if getattr(setup.datamodule, "loader_reason", ""):
        result.details["loader_reason"] = setup.datamodule.loader_reason

    # The fit's measurements are in the row now: a failure from here on costs only the column it concerns.
    validated = _after_fit(result, "validate", lambda: _evaluate(trainer, setup, "validate", result.details)) or []
    if not validated and "validate_skipped" not in result.details and "validate_error" not in result.details:
        empty = _empty_validation(trainer, setup, spec)
        if empty:
            result.details["validate_skipped"] = empty
    test_ckpt = _after_fit(result, "test", lambda: _test_weights(trainer, spec, tricks, checkpoints, result))
    # best.ckpt as this process saved it is read in full (a module's scheduler may keep a numpy scalar
    # there); one taken over from a resumed run is not (harness.runfolder.checkpoints.OwnCheckpointIO)
    own = bool(test_ckpt and checkpoints is not None and checkpoints.best is not None and checkpoints.best.saved(test_ckpt))
    tested = _after_fit(
        result, "test", lambda: _evaluate(trainer, setup, "test", result.details, ckpt_path=test_ckpt, weights_only=False if own else None)
    ) or []
    if spec.profiler:
        result.details["profile_files"] = profile_files(spec.run_dir, spec.run_id)
    (result.val_loss, val_key), (result.test_loss, test_key) = _metric(validated, "val_loss"), _metric(tested, "test_loss")
    if result.val_loss is None and spec.monitor != "val_loss":  # a module that logs its own metric name
        result.val_loss, val_key = _metric(validated, spec.monitor)
    if val_key not in (None, "val_loss"):  # where the val column comes from: val_loss_epoch, the --monitor metric
        result.details["val_loss_from"] = val_key
    if test_key not in (None, "test_loss"):
        result.details["test_loss_from"] = test_key
    columns = ("val_loss", "val_loss_epoch", "test_loss", "test_loss_epoch")
    extra = {k: float(v) for output in (*validated, *tested) for k, v in output.items() if k not in columns}
    if extra:  # e.g. the CNN's val_acc and test_acc
        result.details["metrics"] = extra
    if result.val_loss is not None and not math.isfinite(result.val_loss):
        raise NonFiniteLoss(f"validation loss is {result.val_loss} after training")
    for trick in tricks:
        trick.record(result)


def _after_fit(result: Result, stage: str, step: Callable[[], Any]) -> Any:
    """Run one step after a finished fit; a failure there is recorded, not raised (None returned).

    The row keeps its throughput, memory, train loss and val curve: its status stays "ok", its
    reason and ``details["<stage>_error"]`` say what failed (one line), and a warning says which
    column stays empty. A NaN or a user error is no such failure and still fails the row.
    """
    if f"{stage}_error" in result.details:  # an earlier step of this stage failed: nothing to do
        return None
    try:
        return step()
    except (NonFiniteLoss, UserError, TrickSkipped, TrickFailed):
        raise
    except Exception as error:
        traceback.print_exc()
        line = describe(error)
        result.details[f"{stage}_error"] = line
        column = "val loss" if stage == "validate" else "test loss"
        result.reason = f"{stage} after fit failed ({line}); the fit's measurements stand, the {column} column stays empty"
        add_warning(result.details, result.reason)
        return None


def _budget_spent(checkpoint: str, spec: RunSpec) -> bool:
    """Whether a checkpoint was saved with the run's budget already used up (its epochs or steps)."""
    try:  # weights_only: the file may come from elsewhere; anything it cannot read, fit reports itself
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:
        return False
    if not isinstance(saved, dict):
        return False
    epochs_done = int(saved.get("epoch", -1)) + 1
    steps_done = int(saved.get("global_step", 0))
    return (spec.max_epochs > 0 and epochs_done >= spec.max_epochs) or (spec.max_steps > 0 and steps_done >= spec.max_steps)


def _check_budget(result: Result, spec: RunSpec, meter: ThroughputMeter) -> None:
    """A budget that trained or measured nothing is a failed row that says why, never an "ok" one;
    the batch size recorded is the one the batches had, when the dataset was smaller than asked for."""
    if meter.timer.batches == 0:
        if result.details.get("resumed_from"):
            raise TrickFailed(
                f"trained nothing: resumed from {spec.resume_from}, whose run had spent its budget already; "
                "delete that checkpoint and `resume --retry-failed` to run it afresh"
            )
        raise TrickFailed(
            f"trained nothing: 0 training batches ran (max_epochs {spec.max_epochs}, max_steps {spec.max_steps}); "
            "is the training set smaller than one batch (--synthetic-size, the datamodule)?"
        )
    if meter.example_batch is not None and result.batch_size:
        actual = batch_size_of(meter.example_batch)
        if actual < result.batch_size:  # the whole training set is one smaller batch
            result.details["batch_size_requested"] = result.batch_size
            result.batch_size = actual
    if not result.blocks_measured:
        raise TrickFailed(
            f"measured nothing: no timing block was completed in the {meter.timer.batches} training batches that ran "
            f"(--block-steps {spec.block_steps or meter.timer.block_steps}); lower --block-steps or raise the budget"
        )


def _record_contention(result: Result, trainer: pl.Trainer, monitor: ContentionMonitor, device: torch.device) -> None:
    """The share of the machine's CPU time that other processes took during training, with a warning
    when it is large or oversubscribes the CPUs (every rank's own CPU time and threads count as the
    run's: a collective under DDP), and the thread counts fit ran with."""
    if monitor.threads:
        result.details["threads_in_fit"] = dict(monitor.threads)
    own = monitor.own_seconds
    if trainer.world_size > 1:
        own = float(trainer.strategy.reduce(torch.tensor(own, dtype=torch.float64, device=device), reduce_op="sum"))
    threads = monitor.threads.get("intra_op", 0) * trainer.world_size if device.type == "cpu" and monitor.threads else None
    record_contention(result.details, monitor.before, monitor.after, own, threads)


def _record_measurements(
    result: Result, trainer: pl.Trainer, meter: ThroughputMeter, curve: ValCurve, device: torch.device
) -> None:
    """Throughput, peak memory and the validation curve into the row, the ranks of a distributed
    run combined (collectives: every rank calls this): samples summed, memory per rank."""
    result.world_size = trainer.world_size  # known for sure once the processes exist
    peak, result.mem_kind = peak_memory(device)
    peaks = gather_peaks(trainer, peak)
    result.peak_mem_bytes = max(peaks)
    if len(peaks) > 1:
        result.details["peak_mem_per_rank"] = peaks
    summary = summarise(combine_blocks(trainer, meter.timer.blocks), meter.timer.warmup_blocks)
    for name, value in throughput_fields(summary).items():
        setattr(result, name, value)
    if summary is not None and summary.warning:
        result.details["measure_warning"] = summary.warning
    if meter.auto_block_steps:  # --block-steps auto: the size it chose from the planned batches
        result.details["block_steps"] = meter.timer.block_steps
    result.curve = [{**point, "samples": point["samples"] * trainer.world_size} for point in curve.points]
    result.train_loss = meter.timer.final_train_loss  # the last epoch's mean; over every rank's shard when distributed
    if trainer.world_size > 1 and result.train_loss is not None:
        result.train_loss = float(trainer.strategy.reduce(torch.tensor(result.train_loss, device=device), reduce_op="mean"))


def _logged_train_loss(result: Result, metrics: dict[str, Any]) -> None:
    """The train loss of a module whose ``training_step`` returns no loss (manual optimization, a GAN
    that logs ``g_loss`` and ``d_loss``): the logged ``train_loss`` when there is one, else the training
    metrics it logged are named, so that an empty column is not read as "no loss was logged"."""
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
    key = logged_name(scalars, "train_loss")
    if key is not None:
        result.train_loss = scalars[key]
        result.details["train_loss_from"] = (
            f"logged {key}, its last value (training_step returns no loss to average over the epoch)"
        )
        return
    logged = {k: v for k, v in scalars.items() if "val" not in k and "test" not in k}
    if logged:
        result.details["train_metrics"] = logged
        result.details["train_loss_note"] = (
            f"training_step returns no loss and logs no train_loss: the column stays empty; logged in training: "
            f"{', '.join(sorted(logged))} (in details.train_metrics)"
        )


def _test_weights(
    trainer: pl.Trainer, spec: RunSpec, tricks: list[Trick], checkpoints: Checkpointing | None, result: Result
) -> str | None:
    """Which weights the test set sees, recorded in ``details["test_weights"]``; a checkpoint path or None
    for the weights as fit left them.

    The best checkpoint by the monitored metric, as Lightning's ``ckpt_path="best"``; the final
    weights when a trick's result is in no epoch checkpoint (SWA: saved as ``final.ckpt``), when
    checkpoints are off, or when there was no validation to pick a best epoch by.
    """
    if checkpoints is None:
        result.details["test_weights"] = "final weights (--no-checkpoints)"
        return None
    result.checkpoints = saved_checkpoints(checkpoints, spec.run_dir)
    best = checkpoints.best
    result.details.update(best_summary(best, result.curve))
    final_reasons = [trick.tests_final_weights for trick in tricks if trick.tests_final_weights]
    if final_reasons:
        path = checkpoint_dir(spec.run_dir, spec.run_id) / f"{FINAL}.ckpt"
        trainer.save_checkpoint(path)  # a collective: every rank calls it, rank 0 writes
        result.checkpoints[FINAL] = relative(path, spec.run_dir)
        result.details["test_weights"] = f"final.ckpt: {'; '.join(final_reasons)}"
        return None
    if checkpoints.note:
        result.details["test_weights"] = f"final weights: {checkpoints.note}"
        return None
    if best is None or "best" not in result.checkpoints:
        empty = result.details.get("validate_skipped") if best is not None else None
        why = f"no epoch was validated: {empty}" if empty else "no validation loop to pick a best epoch by"
        result.details["test_weights"] = f"final weights: {why}"
        return None
    epoch = result.details.get("best_epoch")
    where = f" (epoch {epoch}, {best.monitor} {result.details['best_score']:.6g})" if epoch is not None else ""
    result.details["test_weights"] = f"best.ckpt{where}"
    return best.best_model_path


def _empty_validation(trainer: pl.Trainer, setup: Setup, spec: RunSpec) -> str:
    """Why a validation loop that exists ran no batch ('' when it ran some): a loader that drops its last
    batch and holds fewer samples than one, or --limit-val-batches 0."""
    if sum(trainer.num_val_batches or [0]) > 0:
        return ""
    if spec.limit_val_batches == 0:
        return "validation ran 0 batches (--limit-val-batches 0)"
    name = f"{type(setup.datamodule).__name__}.val_dataloader()"
    loaders = trainer.val_dataloaders
    for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
        dataset = getattr(loader, "dataset", None)
        if getattr(loader, "drop_last", False) and hasattr(dataset, "__len__"):
            return (
                f"{name} yielded 0 batches: it drops its last batch (drop_last=True) and holds {len(dataset)} samples, "
                f"fewer than one batch of {loader.batch_size}; set drop_last=False for validation"
            )
    return f"{name} yielded 0 batches"


def _missing_stage(setup: Setup, stage: str) -> list[str]:
    """What the module and datamodule lack to run ``validate`` or ``test`` (empty: nothing)."""
    step, loader = ("validation_step", "val_dataloader") if stage == "validate" else ("test_step", "test_dataloader")
    return [
        f"{type(owner).__name__}.{name}"
        for owner, name, base in ((setup.module, step, pl.LightningModule), (setup.datamodule, loader, pl.LightningDataModule))
        if not is_overridden(name, owner, base)
    ]


def _evaluate(
    trainer: pl.Trainer, setup: Setup, stage: str, details: dict[str, Any], ckpt_path: str | None = None,
    weights_only: bool | None = None,
) -> list[dict[str, float]]:
    """``trainer.validate`` or ``trainer.test``, when the module and datamodule define that stage.

    The built-in workloads always do; an imported module may have no test set (or no validation
    set), and that leaves the column empty, with the reason in details, rather than failing the row.
    """
    missing = _missing_stage(setup, stage)
    if missing:
        details[f"{stage}_skipped"] = f"no {' or '.join(missing)}"
        return []
    return getattr(trainer, stage)(
        setup.module, datamodule=setup.datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=weights_only
    )


def _count_flops(result: Result, workload: Workload, spec: RunSpec, batch: Any) -> None:
    """FLOPs per sample on a meta copy of the module, then FLOP/s and MFU; never fails the run."""
    if batch is None:
        return
    if type(workload).plain_loss is Workload.plain_loss:  # e.g. an imported module: no loss to trace
        result.details["flops_note"] = f"FLOPs not counted: workload {spec.workload!r} has no plain PyTorch loss"
        return
    try:
        per_batch = training_flops_per_batch(lambda: workload.build_module(spec), workload.plain_loss, batch)
    except Exception as error:  # a module the FLOP counter cannot trace still gets its other numbers
        result.details["flops_error"] = f"{type(error).__name__}: {error}"
        return
    samples = batch_size_of(batch)
    per_device = result.samples_per_s / result.world_size if result.samples_per_s else result.samples_per_s
    usage = utilisation(per_batch, per_device, samples, spec.accelerator, result.device_name, result.precision)
    result.flops_per_sample = per_batch / samples
    result.flops_per_s = usage.achieved_flops * result.world_size if usage.achieved_flops is not None else None
    result.mfu = usage.mfu
    result.details["mfu_peak"] = usage.peak


def _metric(outputs: list[dict[str, float]], name: str) -> tuple[float | None, str | None]:
    """The value of ``name`` in validate/test outputs and the key it was found under (``NAME`` or ``NAME_epoch``:
    harness.measuring.metrics), or (None, None)."""
    for output in outputs:
        key = logged_name(output, name)
        if key is not None:
            return float(output[key]), key
    return None, None


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.worker [--plain] SPEC.json RESULT.json``; --plain runs the parity loop."""
    die_with_parent()  # no orphan left running when the harness is killed
    args = list(argv if argv is not None else sys.argv[1:])
    plain = "--plain" in args
    spec_path, result_path = [arg for arg in args if arg != "--plain"][:2]
    spec = RunSpec.from_json(Path(spec_path).read_text())
    if plain:
        from harness.parity import execute_plain

        result = execute_plain(spec)
    else:
        result = execute(spec)
    if not is_global_zero_env(dict(os.environ)):  # another rank of a distributed run: rank 0 writes the row
        return 1 if result.status == "failed" else 0  # a failed rank exits non-zero, so Lightning stops the others
    tmp = Path(result_path).with_suffix(".tmp")
    tmp.write_text(result.to_json())
    tmp.replace(result_path)  # atomic: the runner never reads half a result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
