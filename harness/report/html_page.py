"""report.html: one self-contained page (PNGs embedded as data URIs, no script, no external link).

Tables are pandas' (``Styler.to_html`` for the comparison table, whose best/worst/noisy cells get
CSS classes from ``table.cell_marks``; ``DataFrame.to_html`` for key/value tables); prose is the
same Markdown the .md page uses, converted by the ``markdown`` package (a tensorboard dependency).

Everything on the page that comes from a run's files (reasons, trick names, warnings, dataset text,
paths) is untrusted: a module's exception message becomes a row's reason, and a shared folder may
be crafted. So the Markdown is rendered with raw HTML off (``<script>`` in a reason shows as text),
tables and headings are escaped, and a link or image source survives only when it is a relative
path inside the run folder or an in-page ``#anchor`` (:func:`safe_href`).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xml.etree.ElementTree as etree

import markdown
import pandas as pd
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from harness.errors import UserError
from harness.report.mdtext import safe_href
from harness.report.table import PART_TITLES, split_columns
from harness.report.text import FILES_TEXT, header_lines, problem_lines, protocol_text, warning_lines
from harness.report.verdicts import verdicts_html
from harness.runfolder.rundir import inside_run_dir

if TYPE_CHECKING:
    from harness.report.build import Group, Plot, Report

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1500px;
       padding: 0 1rem; color: #222; line-height: 1.45; overflow-wrap: anywhere; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; font-size: .9em; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f5f5f5; }
table.results td { font-variant-numeric: tabular-nums; }
td.best { background: #dff3e4; font-weight: bold; } td.worst { background: #fbe3e1; }
td.noisy { outline: 2px dashed #e69500; outline-offset: -3px; }
td.short { color: #777; font-style: italic; }
ol.notes { font-size: .85rem; margin: .2rem 0 1rem; padding-left: 2.2rem; max-width: 70rem; }
ol.notes li::marker { content: "[" counter(list-item) "] "; }
.legend { font-size: .85rem; } .legend span { padding: 0 .4rem; margin-right: .6rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
nav ul { columns: 2; } .details { display: flex; flex-wrap: wrap; gap: 1.5rem; }
.details section { min-width: 20rem; flex: 1 1 20rem; max-width: 100%; }
"""
LEGEND = (
    '<p class="legend"><span class="best" style="background:#dff3e4;font-weight:bold">best of its column</span>'
    '<span style="background:#fbe3e1">worst</span>'
    '<span style="outline:2px dashed #e69500">noisy: the interquartile range over timing blocks is more than 10% of the median</span>'
    '<span style="color:#777;font-style:italic">too short: fewer than 2 timing blocks after warm-up, never best or worst</span>'
    "<br>Values within 1% of each other tie (no colour between them); peak memory ties within its noise band: "
    "5% for a CPU's max RSS (the whole process, which moves 1-3% between identical runs), 1% for CUDA's max "
    "allocated. <code>[n]</code>: the numbered note under the table.</p>"
)


class _SafeLinks(Treeprocessor):
    """Drops every ``href``/``src`` that :func:`safe_href` refuses (the link's text stays)."""

    def run(self, root: etree.Element) -> None:
        for element in root.iter():
            for attribute in ("href", "src"):
                value = element.get(attribute)
                if value is not None and not safe_href(value):
                    del element.attrib[attribute]


class _NoRawHtml(Extension):
    """Markdown without raw HTML: ``<tag>`` text (block or inline) is escaped, not passed through."""

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown package's name)
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_SafeLinks(md), "safe_links", 0)


def md(text: str) -> str:
    """Markdown to HTML for text that holds data from the run's files: no raw HTML, only safe links."""
    return markdown.markdown(text, extensions=["sane_lists", _NoRawHtml()])


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_html(run_dir: Path, plot: Plot) -> str:
    if plot.error:
        return f"<p><b>{html.escape(plot.title)}</b>: not drawn from these rows ({html.escape(plot.error)}).</p>"
    path = run_dir / plot.path
    if not path.is_file():
        return f"<p>(missing image {html.escape(plot.path)})</p>"
    caption_html = md(plot.caption).removeprefix("<p>").removesuffix("</p>") if plot.caption else ""
    caption = f"<b>{html.escape(plot.title)}.</b> {caption_html}"
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(plot.title)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def styled_table(table: pd.DataFrame, marks: pd.DataFrame, uuid: str) -> str:
    """The comparison table through pandas' Styler: the marks become the cells' CSS classes."""
    styler = table.style.format(escape="html").hide(axis="index")
    styler = styler.set_td_classes(marks)
    return styler.to_html(table_uuid=uuid, table_attributes='class="results"')


def key_value_table(items: dict[str, Any], key: str = "key", value: str = "value") -> str:
    frame = pd.DataFrame({key: list(items.keys()), value: [str(v) for v in items.values()]})
    return frame.to_html(index=False, border=0, escape=True, classes="kv")


def flatten(env: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested env.json -> 'versions.torch': '2.4.1'; lists as JSON."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        elif isinstance(value, list):
            out[f"{prefix}{name}"] = json.dumps(value) if value else "none"
        else:
            out[f"{prefix}{name}"] = value
    return out


def _file_link(run_dir: Path, label: str, path: object) -> str:
    """A list item linking a row's file; plain text when the path is not a safe link inside the run folder."""
    if isinstance(path, str) and safe_href(path):
        try:
            inside_run_dir(run_dir, path, "link")
        except UserError:
            pass
        else:
            return f'<li><a href="{html.escape(path, quote=True)}">{html.escape(label)}</a></li>'
    return f"<li>{html.escape(label)}: {html.escape(str(path))} (not a file inside the run folder; not linked)</li>"


def notes_html(notes: list[str], index: int) -> str:
    """A group's notes as a numbered list under its table (the table's note column says ``[n]``)."""
    if not notes:
        return ""
    items = "".join(f'<li id="group-{index}-note-{n}">{html.escape(note)}</li>' for n, note in enumerate(notes, 1))
    return f'<ol class="notes">{items}</ol>'


def _group_html(report: Report, group: Group, index: int) -> str:
    (main, *others), (main_marks, *other_marks) = split_columns(group.table), split_columns(group.marks)
    parts = [
        f'<h2 id="group-{index}">{html.escape(group.heading)}</h2>',
        md(group.target_text),
        styled_table(main, main_marks, uuid=f"group{index}"),
        notes_html(group.notes, index),
    ]
    for number, (title, part, marks) in enumerate(zip(PART_TITLES[1:], others, other_marks), 1):
        if len(part.columns) > 1:
            parts += [f"<p>{html.escape(title)}</p>", styled_table(part, marks, uuid=f"group{index}part{number}")]
    parts.append(LEGEND)
    if group.pareto:
        parts.append(md(f"Pareto front (cheapest for their val loss): **{', '.join(group.pareto)}**."))
    parts += [figure_html(report.run_dir, plot) for plot in group.plots]
    return "\n".join(parts)


def render_html(report: Report) -> str:
    title = f"Trick bench report: {report.run_dir.name}"
    body = [f"<h1>{html.escape(title)}</h1>", md("\n".join(header_lines(report)))]
    sections = [(f"group-{i}", g.heading) for i, g in enumerate(report.groups)]
    sections += [("details", "What each trick did"), ("problems", "Skipped and failed runs"),
                 ("protocol", "How this was measured"), ("environment", "Environment")]
    body.append("<nav><ul>" + "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in sections) + "</ul></nav>")
    body.append(verdicts_html(report.verdicts))  # the answers first, the wide tables below
    if not report.groups:
        body.append("<p>No results yet.</p>")
    body += [_group_html(report, group, i) for i, group in enumerate(report.groups)]

    body.append('<h2 id="details">What each trick did</h2>')
    cards = []
    for details in report.details:
        images = "".join(figure_html(report.run_dir, image) for image in details.images)
        links = "".join(_file_link(report.run_dir, label, path) for label, path in details.links)
        links = f'<p>Files:</p><ul class="files">{links}</ul>' if links else ""
        cards.append(f"<section><h3>{html.escape(details.heading)}</h3>"
                     f"{key_value_table(details.items, 'detail', 'value')}{links}{images}</section>")
    body.append('<div class="details">' + "".join(cards) + "</div>")

    body.append('<h2 id="problems">Skipped and failed runs</h2>')
    problems = problem_lines(report.results)
    body.append(md("\n".join(problems)) if problems else "<p>None.</p>")
    warnings = warning_lines(report.results)
    if warnings:
        body += ["<h2>Measurement warnings</h2>", md("\n".join(warnings))]
    body += ['<h2 id="protocol">How this was measured</h2>', md(protocol_text(report.results)), md(FILES_TEXT)]
    body += ['<h2 id="environment">Environment</h2>', key_value_table(flatten(report.env) or {"env.json": "missing"}, "field")]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
