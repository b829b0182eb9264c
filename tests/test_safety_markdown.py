"""report.md shows a run's data as text: a pipe, a newline, a backtick, ``<script>`` or a
``[link](javascript:...)`` in a reason, trick name, note, warning, path or env.json field never splits a
table cell, starts a heading, opens a code span, becomes HTML or becomes a link."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import markdown

from harness.cli import main
from harness.report.mdtext import md_code, md_link, md_text
from harness.runfolder.rundir import RESULTS
from harness.spec import Result

PAYLOAD = "a|b\n## injected heading\n| x | y |\n`tick` <script>alert(1)</script> [click](javascript:alert(3)) ![i](http://evil/i.png) *em* \\"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def hostile_run(run_dir: Path) -> Path:
    """A run folder whose rows and env.json carry the payload in every text field report.md shows."""
    run_dir.mkdir(parents=True)
    rows = [
        Result(run_id="ae-cpu-baseline-r0", trick="baseline", workload="ae", dataset="digits", accelerator="cpu",
               repeat=0, status="ok", samples_per_s=100.0, val_loss=0.5, wall_s=1.0, mem_kind=f"rss{PAYLOAD}",
               checkpoints={"best": "javascript:alert(5)", "last": f"checkpoints/{PAYLOAD}.ckpt"},
               details={"dataset_reason": PAYLOAD, "measure_warning": PAYLOAD, "note": PAYLOAD, "test_weights": PAYLOAD}),
        Result(run_id="ae-cpu-evil-r0", trick=f"evil{PAYLOAD}", workload="ae", dataset="digits", accelerator="cpu",
               repeat=0, status="ok", samples_per_s=90.0, val_loss=0.6, wall_s=1.0, details={"note": PAYLOAD}),
        Result(run_id="ae-cpu-evil2-r0", trick=f"evil2{PAYLOAD}", workload="ae", dataset="digits", accelerator="cpu",
               repeat=0, status="failed", reason=PAYLOAD, details={"measure_warning": PAYLOAD}),
    ]
    (run_dir / RESULTS).write_text("".join(r.to_json() + "\n" for r in rows))
    env = {"command": f"python -m harness run ``{PAYLOAD}", "cpu": PAYLOAD, "git_commit": f"`{PAYLOAD}", "python": PAYLOAD}
    (run_dir / "env.json").write_text(json.dumps(env))
    return run_dir


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_a_hostile_row_cannot_break_report_md(tmp_path: Path) -> None:
    run_dir = hostile_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    text = (run_dir / "report.md").read_text()
    lines = text.splitlines()
    assert not [line for line in lines if "injected heading" in line and line.lstrip().startswith("#")]
    assert not [line for line in lines if line.startswith("| x | y |")]
    # every table keeps the cells of its header row
    tables: list[list[str]] = []
    for previous, line in zip(["", *lines], lines):
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
    assert tables
    for table in tables:
        assert {unescaped_pipes(line) for line in table} == {unescaped_pipes(table[0])}, table
    # outside code (fenced verdict rows, the command's code span show their text as it is) no raw tag is left
    outside_code = re.sub(r"^```\n.*?^```$", "", text, flags=re.S | re.M)
    outside_code = re.sub(r"(`+) .*? \1(?!`)|`[^`]*`", "", outside_code)
    assert "<script" not in outside_code.lower() and "&lt;script&gt;" in outside_code
    assert not re.search(r"(?<!\\)\]\((javascript:|http)", outside_code)  # an escaped \] opens no link
    assert "evil" in text and "alert(1)" in text  # the reader still sees what the row said
    # as a Markdown renderer sees it: no tag, no script link, no image from elsewhere, no heading from data
    tags = Tags()
    tags.feed(markdown.markdown(text, extensions=["tables"]))
    assert not [tag for tag, _ in tags.tags if tag in ("script", "iframe", "object", "embed")]
    for tag, attrs in tags.tags:
        for name in ("href", "src"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("javascript:", "http", "/", "..")), (tag, attrs)


def test_md_text_leaves_no_markup() -> None:
    assert md_text("a|b\nc") == "a&#124;b c"
    assert md_text("<b>`x`</b>") == "&lt;b&gt;\\`x\\`&lt;/b&gt;"
    assert md_text("[x](javascript:y)") == "[x\\](javascript:y)" and md_text("[1] val_loss _x_") == "[1] val_loss \\_x\\_"
    assert md_code("a ` b") == "`` a ` b ``" and md_code("plain") == "`plain`"
    assert md_link("x", "javascript:alert(1)") == "x (javascript:alert(1), not linked)"
    assert md_link("x", "../up.ckpt").endswith("not linked)")
    assert md_link("plot", "plots/a(1).png", image=True) == "![plot](plots/a%281%29.png)"
    assert md_link("plot", "plots/a b.png").endswith("not linked)")  # safe_href: no spaces in a link
