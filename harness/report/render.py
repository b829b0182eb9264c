"""Write a run's report files: results.csv, report.md (and the same tables for the terminal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.table import GROUP, display_table, results_frame, summary_frame
from harness.spec import BASELINE, Result

PROTOCOL = """\
- Each run (baseline or trick) ran in its own fresh process with the same seed, data and budget.
- samples/s is the median over blocks of training batches after the first warm-up block(s), with a
  device sync only at block edges; validation, checkpointing and epoch ends are paused out of the clock.
  `±x%` is the interquartile range over those blocks relative to the median; `noisy` flags IQR/median > 10%.
- Peak memory is `{mem_kinds}`: on a CPU that is the whole child process's max RSS (torch and Lightning
  included, hence close ratios); on a GPU it is `torch.cuda.max_memory_allocated` over `fit`.
- Losses: train = mean over the last epoch; val and test = `Trainer.validate`/`test` on the final weights.
- wall s is the whole run after imports: data, setup, tuning, fit, validate and test.
- Ratios are against the baseline of the same table: samples/s above 1.00x is faster; ms/batch,
  memory, losses and wall time below 1.00x are lower."""


def markdown_table(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, disable_numparse=True)


def terminal_tables(summary: pd.DataFrame) -> str:
    parts = []
    for key, group in summary.groupby(GROUP, sort=False):
        workload, dataset, accelerator = key
        device = group["device_name"].dropna().iloc[0] if group["device_name"].notna().any() else ""
        parts.append(f"{workload} on {accelerator} ({device}), dataset {dataset}")
        parts.append(display_table(group).to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    return "\n\n".join(parts)


def _details_lines(results: list[Result]) -> list[str]:
    lines = []
    seen = set()
    for result in results:
        details = {k: v for k, v in result.details.items() if k not in ("dataset_reason",)}
        if result.trick == BASELINE and not details or (result.trick, result.accelerator) in seen:
            continue
        seen.add((result.trick, result.accelerator))
        text = ", ".join(f"{k}={v}" for k, v in details.items()) or "(nothing recorded)"
        lines.append(f"- **{result.trick}** ({result.workload}, {result.accelerator}): {text}")
    return lines


def render_markdown(run_dir: Path, results: list[Result], env: dict[str, Any]) -> str:
    summary = summary_frame(results)
    versions = env.get("versions", {})
    dataset_reasons = sorted({r.details.get("dataset_reason", "") for r in results} - {""})
    lines = [
        f"# Trick bench report: {run_dir.name}",
        "",
        f"- Command: `{env.get('command', '?')}`",
        f"- When: {env.get('time_utc', '?')}; git commit `{env.get('git_commit') or 'unknown'}`",
        f"- Machine: {env.get('cpu', '?')} ({env.get('cpu_count', '?')} CPUs, {env.get('torch_threads', '?')} torch threads)"
        + "".join(f"; GPU {g['name']}" for g in env.get("gpus", [])),
        f"- Versions: python {env.get('python', '?')}, torch {versions.get('torch')}, lightning {versions.get('lightning')}",
        *(f"- Dataset: {reason}" for reason in dataset_reasons),
        "",
    ]
    for key, group in summary.groupby(GROUP, sort=False):
        workload, dataset, accelerator = key
        device = group["device_name"].dropna().iloc[0] if group["device_name"].notna().any() else ""
        lines += [f"## {workload} on {accelerator} ({device}), dataset {dataset}", "", markdown_table(display_table(group)), ""]
    details = _details_lines(results)
    if details:
        lines += ["## What each trick did", "", *details, ""]
    problems = [r for r in results if r.status != "ok"]
    if problems:
        lines += ["## Skipped and failed runs", ""]
        lines += [f"- **{r.trick}** ({r.workload}, {r.accelerator}, repeat {r.repeat}): {r.status}: {r.reason}" for r in problems]
        lines.append("")
    warnings = sorted({f"{r.trick}: {r.details['measure_warning']}" for r in results if "measure_warning" in r.details})
    if warnings:
        lines += ["## Measurement warnings", "", *(f"- {w}" for w in warnings), ""]
    mem_kinds = ", ".join(sorted({r.mem_kind for r in results if r.mem_kind})) or "n/a"
    lines += ["## How this was measured", "", PROTOCOL.format(mem_kinds=mem_kinds), ""]
    lines += ["Files: `results.jsonl` (source of truth), `results.csv`, `env.json`, `logs/` (one log per run), "
              "`tb/` (TensorBoard: `tensorboard --logdir tb`).", ""]
    return "\n".join(lines)


def write_report(run_dir: Path, results: list[Result], env: dict[str, Any] | None = None) -> str:
    """Write results.csv and report.md into ``run_dir``; return the terminal tables."""
    if env is None:
        env_path = run_dir / "env.json"
        env = json.loads(env_path.read_text()) if env_path.exists() else {}
    results_frame(results).to_csv(run_dir / "results.csv", index=False)
    (run_dir / "report.md").write_text(render_markdown(run_dir, results, env))
    summary = summary_frame(results)
    return terminal_tables(summary) if not summary.empty else "(no results)"
