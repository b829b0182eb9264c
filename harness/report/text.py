"""The report's prose, shared by report.md and report.html: run header, problems, protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.measuring.flops import PEAKS_NOTE
from harness.report.mdtext import md_code, md_text
from harness.report.order import order_check_text
from harness.report.target import DEFINITION as TARGET_DEFINITION
from harness.spec import Result

if TYPE_CHECKING:
    from harness.report.build import Report

PROTOCOL = """\
- Each run (baseline or trick) ran in its own fresh process with the same seed, data and budget.
- samples/s is the median over blocks of training batches after the first warm-up block(s), pooled over
  repeats, with a device sync only at block edges; validation, checkpointing and epoch ends are paused out
  of the clock. `±x%` is the interquartile range over those blocks relative to the median; `noisy` flags
  IQR/median > 10%.
- FLOP/s: forward + backward FLOPs of the training loss per sample (Lightning's `measure_flops` on a
  meta-device copy of the module) times samples/s. MFU (GPU rows only): FLOP/s over {peaks}.
- Peak memory is {mem_kinds}: on a CPU `max_rss_fit` is the run process's RSS high-water mark from the
  start of `fit` (reset through `/proc/self/clear_refs`; torch and Lightning included, hence close ratios),
  `max_rss` the same since the process began; on a GPU it is `torch.cuda.max_memory_allocated` over `fit`.
- Losses: train = mean over the last epoch (TensorBoard's `train_loss`: one mean per timing block); val =
  `Trainer.validate` on the final weights (where the curves end); test = `Trainer.test` on {test_weights}.
- wall s is the whole run after imports: data, setup, tuning, fit, validate and test.
- {target_definition}
- Pareto front (wall time against final val loss): the rows that no other row beats on both.
- Ratios are against the baseline of the same table: samples/s above 1.00x is faster; ms/batch,
  memory, losses and wall time below 1.00x are lower."""


MARK_LEGEND = (
    "**bold**: best of its column, _italic_: worst (values within 1% of each other tie; peak memory within its "
    "noise band: 5% for a CPU's max RSS, 1% for CUDA's max allocated); `noisy`: IQR/median > 10%; `too short`: "
    "fewer than 2 timing blocks after warm-up, so its speed is never best or worst. "
    "`[n]`: a note under the table."
)
TERMINAL_FOOTER = "More columns (test loss, ms/batch, train loss, FLOP/s, precision, batch, steps, ...): report.md, report.html, summary.csv."


def header_lines(report: Report) -> list[str]:
    """The run's identity as Markdown bullets (both pages use them)."""
    env = report.env
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    gpus = [g for g in env.get("gpus") or [] if isinstance(g, dict)] if isinstance(env.get("gpus"), list) else []
    dataset_reasons = sorted({r.details.get("dataset_reason", "") for r in report.results} - {""})
    return [
        f"- Command: {md_code(env.get('command', '?'))}",
        f"- When: {md_text(env.get('time_utc', '?'))}; git commit {md_code(env.get('git_commit') or 'unknown')}",
        f"- Machine: {md_text(env.get('cpu', '?'))} ({md_text(env.get('cpu_count', '?'))} CPUs, "
        f"{md_text(env.get('torch_threads', '?'))} torch threads)"
        + "".join(f"; GPU {md_text(g.get('name', '?'))}" for g in gpus),
        f"- Versions: python {md_text(env.get('python', '?'))}, torch {md_text(versions.get('torch'))}, "
        f"lightning {md_text(versions.get('lightning'))}",
        *(f"- Dataset: {md_text(reason)}" for reason in dataset_reasons),
    ]


def problem_lines(results: list[Result]) -> list[str]:
    problems = [r for r in results if r.status != "ok"]
    return [
        f"- **{md_text(r.trick)}** ({md_text(r.workload)}, {md_text(r.accelerator)}, repeat {md_text(r.repeat)}): "
        f"{md_text(r.status)}: {md_text(r.reason)}"
        for r in problems
    ]


def warning_lines(results: list[Result]) -> list[str]:
    warnings = sorted({f"{r.trick}: {r.details['measure_warning']}" for r in results if "measure_warning" in r.details})
    return [f"- {md_text(w)}" for w in warnings]


def test_weights_text(results: list[Result]) -> str:
    """What the test set saw, from the rows' ``details.test_weights`` (harness.worker._test_weights)."""
    kinds = {}
    for r in results:
        weights = r.details.get("test_weights")
        if r.status != "ok" or not isinstance(weights, str):
            continue
        kind = weights.split(" ", 1)[0].rstrip(":")  # "best.ckpt (epoch 2, ...)", "final.ckpt: ...", "final weights: ..."
        kind = {"final": "the final weights"}.get(kind, kind)
        kinds.setdefault(md_text(kind), []).append(md_text(r.trick))
    if not kinds:
        return "weights that these rows do not name (no `test_weights` detail: rows from an older harness)"
    if len(kinds) == 1:
        (kind,) = kinds
        return {"best.ckpt": "`best.ckpt`, the epoch with the best monitored val metric (Lightning's `ckpt_path=\"best\"`)",
                "final.ckpt": "`final.ckpt`, the weights as fit left them"}.get(kind, kind)
    parts = []
    for kind, tricks in kinds.items():
        name = {"best.ckpt": "`best.ckpt` (the best epoch by the monitored val metric)",
                "final.ckpt": "`final.ckpt` (the weights as fit left them: SWA's average)"}.get(kind, kind)
        parts.append(f"{name} for {', '.join(sorted(set(tricks)))}")
    return "; ".join(parts) + " (each row's `test_weights` detail says which)"


def protocol_text(results: list[Result]) -> str:
    mem_kinds = ", ".join(md_code(kind) for kind in sorted({str(r.mem_kind) for r in results if r.mem_kind})) or "n/a"
    peaks = sorted({md_text(r.details["mfu_peak"]) for r in results if r.mfu is not None and "mfu_peak" in r.details})
    peak_text = "the dense peak of the device for the precision used: " + "; ".join(peaks) if peaks else (
        "the device's dense peak for the precision used (no GPU row here)"
    )
    protocol = PROTOCOL.format(mem_kinds=mem_kinds, target_definition=TARGET_DEFINITION, peaks=peak_text + f" ({PEAKS_NOTE})",
                               test_weights=test_weights_text(results))
    return protocol + "\n\n" + order_check_text(results)


FILES_TEXT = (
    "Files: `results.jsonl` (source of truth), `plan.json` (every planned run; `harness resume` reads it), "
    "`results.csv`, `summary.csv` and `summary.json` (this table's numbers), "
    "`env.json`, `report.md`, `report.html` (self-contained), "
    "`plots/` (the figures), `logs/` (one log per run), `tb/` (TensorBoard: `tensorboard --logdir tb`), "
    "`checkpoints/<run>/` (`best.ckpt`, `last.ckpt`), `profiles/<run>/` (with `--profiler`)."
)
