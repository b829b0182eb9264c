"""Write a run's report files: results.csv, report.md, report.html and plots/*.png.

Every file is regenerated from results.jsonl (and the run's TensorBoard logs and artifacts):
``python -m harness run`` calls :func:`write_report` at the end, ``python -m harness report`` again later.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.report.build import Group, Report, build_report
from harness.report.html_page import render_html
from harness.report.mdtext import md_link, md_text, one_line
from harness.report.table import PART_TITLES, results_frame, split_columns
from harness.report.text import FILES_TEXT, MARK_LEGEND, TERMINAL_FOOTER, header_lines, problem_lines, protocol_text, warning_lines
from harness.report.verdicts import VERDICT_COLUMNS, VERDICTS_INTRO, Verdict, verdict_lines, verdicts_text, with_verdicts
from harness.runfolder.rundir import read_json
from harness.spec import Result


def markdown_table(table: pd.DataFrame, marks: pd.DataFrame | None = None) -> str:
    """The display table as GitHub Markdown; best cells in bold and worst in italics when ``marks`` is given.

    Every cell goes through :func:`md_text` (a trick name or a note from a crafted row must not split a
    cell, end the table or add a link); the marks are added after, so they stay markup.
    """
    table = table.map(lambda value: "-" if value == "-" else md_text(value))
    if marks is not None:
        for column in marks.columns:
            for index in table.index:
                mark, text = marks.at[index, column], table.at[index, column]
                if text == "-":
                    continue
                if "best" in mark:
                    table.at[index, column] = f"**{text}**"
                elif "worst" in mark:
                    table.at[index, column] = f"_{text}_"
    return table.to_markdown(index=False, disable_numparse=True)


NOTE_WIDTH = 100  # notes wrap at this width under a table, in the terminal


def wrapped_notes(notes: list[str], width: int = NOTE_WIDTH) -> list[str]:
    """``[n] text`` per note, wrapped with a hanging indent (terminal)."""
    lines = []
    for number, note in enumerate(notes, 1):
        lines += textwrap.wrap(note, width=width, initial_indent=f"[{number}] ", subsequent_indent=" " * (len(str(number)) + 3),
                               break_long_words=True, break_on_hyphens=False) or [f"[{number}]"]
    return lines


def terminal_tables(groups: list[Group]) -> str:
    """The groups' main tables as plain text, under the same headings as report.md, each followed by
    its notes (wrapped): the other columns are in report.md, report.html and summary.csv."""
    parts = []
    for group in groups:
        main = split_columns(group.table)[0]
        text = group.heading + "\n\n" + main.to_markdown(index=False, tablefmt="simple", disable_numparse=True)
        if group.notes:
            text += "\n\n" + "\n".join(wrapped_notes(group.notes))
        parts.append(text)
    parts.append(TERMINAL_FOOTER)
    return "\n\n".join(parts)


def _group_markdown(group: Group) -> list[str]:
    (main, *others), (main_marks, *other_marks) = split_columns(group.table), split_columns(group.marks)
    lines = [f"## {md_text(group.heading)}", "", group.target_text, "", markdown_table(main, main_marks), ""]
    if group.notes:
        lines += [f"- [{number}] {md_text(note)}" for number, note in enumerate(group.notes, 1)] + [""]
    for title, part, marks in zip(PART_TITLES[1:], others, other_marks):
        if len(part.columns) > 1:
            lines += [title, "", markdown_table(part, marks), ""]
    lines += [MARK_LEGEND, ""]
    if group.pareto:
        lines += [f"Pareto front (cheapest for their val loss): {', '.join(md_text(trick) for trick in group.pareto)}.", ""]
    for plot in group.plots:
        if plot.error:
            lines += [f"_{md_text(plot.title)}: not drawn from these rows ({md_text(plot.error)})._", ""]
            continue
        lines += [md_link(plot.title, plot.path, image=True), "", f"_{md_text(plot.title)}._ {plot.caption}", ""]
    return lines


def verdicts_markdown(verdicts: list[Verdict]) -> list[str]:
    """The verdict lines as a Markdown section (report.md puts it before the tables)."""
    if not verdicts:
        return []
    lines = ["## Verdicts", "", VERDICTS_INTRO, ""]
    for heading, rows in verdict_lines(verdicts):
        # a code block keeps the columns, and shows its text as it is (no markup, no HTML); backticks in the
        # data (a reason) must not end it, nor a line break in it start a line outside the row
        lines += [f"**{md_text(heading)}**", "", "```", *(one_line(row).replace("`", "'") for row in rows), "```", ""]
    return lines



def render_markdown(report: Report) -> str:
    lines = [f"# Trick bench report: {report.run_dir.name}", "", *header_lines(report), ""]
    lines += verdicts_markdown(report.verdicts)
    for group in report.groups:
        lines += _group_markdown(group)
    if report.details:
        lines += ["## What each trick did", ""]
        for details in report.details:
            items = ", ".join(f"{md_text(k)}={md_text(v)}" for k, v in details.items.items())
            links = "".join(f" {md_link(image.title, image.path)}" for image in details.images)
            links += "".join(f" {md_link(label, path)}" for label, path in details.links)
            lines.append(f"- **{md_text(details.heading)}**: {items}{links}")
        lines.append("")
    problems = problem_lines(report.results)
    if problems:
        lines += ["## Skipped and failed runs", "", *problems, ""]
    warnings = warning_lines(report.results)
    if warnings:
        lines += ["## Measurement warnings", "", *warnings, ""]
    lines += ["## How this was measured", "", protocol_text(report.results), "", FILES_TEXT, ""]
    return "\n".join(lines)


SUMMARY_COLUMNS = [
    "workload", "dataset", "accelerator", "trick", "status", "reason", "repeats", "device_name", "precision",
    "batch_size", "samples_per_s", "samples_per_s_iqr", "noisy", "too_short", "samples_per_s_ratio", "step_time_ms",
    "peak_mem_bytes", "peak_mem_bytes_ratio", "mem_kind", "train_loss", "val_loss", "val_loss_ratio", "test_loss",
    "wall_s", "wall_s_ratio", "tune_s", "compile_s", "to_target_s", "to_target_samples", "flops_per_s", "mfu", "gpu_cpu_speed",
    *VERDICT_COLUMNS,
]


def write_summary(run_dir: Path, summary: pd.DataFrame, verdicts: list[Verdict] | None = None) -> None:
    """summary.csv and summary.json: one row per table cell group (medians over repeats, ratios, noisy flag),
    with each trick's verdict, its category and the axes' ratios and 95% bounds (see report.verdicts)."""
    if summary.empty:
        return
    summary = with_verdicts(summary, verdicts or [])
    columns = [c for c in SUMMARY_COLUMNS if c in summary.columns]
    table = summary[columns]
    table.to_csv(run_dir / "summary.csv", index=False)
    table.to_json(run_dir / "summary.json", orient="records", indent=2)


def read_env(run_dir: Path) -> dict[str, Any]:
    """env.json as an object; {} when it is missing or holds something else (named on stderr).

    The environment only describes the run: a file from another tool or a crafted one must not
    stop the report, whose numbers come from results.jsonl.
    """
    path = run_dir / "env.json"
    if not path.is_file():
        return {}
    try:
        env = read_json(path, "environment record")
    except UserError as error:
        print(f"harness: ignored env.json: {error}", file=sys.stderr)
        return {}
    if not isinstance(env, dict):
        print(f"harness: ignored {path}: a JSON {type(env).__name__}, not an object", file=sys.stderr)
        return {}
    return env


def write_report(run_dir: Path, results: list[Result], env: dict[str, Any] | None = None, *,
                 target_val_loss: float | None = None) -> str:
    """Write results.csv, summary.csv/json, plots/*.png, report.md and report.html; return the terminal tables.

    ``target_val_loss``: the val loss that time-to-target is measured against; None: each group's
    baseline final val loss.
    """
    if env is None:
        env = read_env(run_dir)
    results_frame(results).to_csv(run_dir / "results.csv", index=False)
    report = build_report(run_dir, results, env, target_val_loss)
    write_summary(run_dir, report.summary, report.verdicts)
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "report.html").write_text(render_html(report))
    if not report.groups:
        return "(no results)"
    verdicts = verdicts_text(report.verdicts)
    return (verdicts + "\n\n" if verdicts else "") + terminal_tables(report.groups)
