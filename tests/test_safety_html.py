"""report.html shows a run's data as text: a payload in a reason, trick name, warning, dataset text or
path (a module's exception message is enough to put one in a row) never becomes a tag, an event
handler or a script link on the page, and the page has no script of its own."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.html_page import md, safe_href
from harness.runfolder.rundir import RESULTS
from harness.spec import Result

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
LINK = "[click](javascript:alert(3))"
PAYLOAD = f"{SCRIPT} {IMG} {LINK} <a href='javascript:alert(4)'>x</a>"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def hostile_run(run_dir: Path) -> Path:
    """A run folder whose rows carry the payload in every text field the report shows."""
    run_dir.mkdir(parents=True)
    rows = [
        Result(run_id="ae-cpu-baseline-r0", trick="baseline", workload="ae", dataset="digits", accelerator="cpu",
               repeat=0, status="ok", samples_per_s=100.0, val_loss=0.5, wall_s=1.0,
               checkpoints={"best": "javascript:alert(5)", "last": "../../outside.ckpt", "ok": "checkpoints/a/b.ckpt"},
               details={"dataset_reason": PAYLOAD, "measure_warning": PAYLOAD, "note": PAYLOAD,
                        "profile_files": ["javascript:alert(6)", "/etc/passwd"]}),
        Result(run_id="ae-cpu-evil-r0", trick=f"evil{SCRIPT}{IMG}", workload="ae", dataset="digits",
               accelerator="cpu", repeat=0, status="failed", reason=PAYLOAD, details={"measure_warning": PAYLOAD}),
    ]
    (run_dir / RESULTS).write_text("".join(r.to_json() + "\n" for r in rows))
    (run_dir / "env.json").write_text(json.dumps({"command": f"python -m harness run {PAYLOAD}", "cpu": PAYLOAD}))
    return run_dir


def test_a_hostile_row_renders_as_text_in_report_html(tmp_path: Path) -> None:
    run_dir = hostile_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    parser = Elements()
    parser.feed(page)
    assert "<script" not in page.lower()
    assert not [tag for tag, _ in parser.tags if tag in ("script", "iframe", "object", "embed")]
    for tag, attrs in parser.tags:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("href", "src"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("javascript:", "/", "..", "http")), (tag, attrs)
            assert not value.startswith("data:") or value.startswith("data:image/png;base64,"), (tag, attrs)
    # the raw payload text never reaches the page unescaped; it is shown as text, escaped
    assert "onerror=" not in page.replace("&lt;img src=x onerror=alert(2)&gt;", "")
    assert "javascript:" not in page.replace("javascript:alert", "")  # no attribute or tag holds it
    assert not any("javascript:" in str(attrs) for _, attrs in parser.tags)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the reader still sees what the module said
    assert 'href="checkpoints/a/b.ckpt"' in page  # a file inside the folder stays linked


@pytest.mark.parametrize("href", ["javascript:alert(1)", "JaVaScRiPt:x", "java\tscript:x", " javascript:x", "data:text/html,x",
                                  "http://evil", "//evil/x", "/etc/passwd", "../x", "a/../../x", "a\\..\\x", "vbscript:x", ""])
def test_unsafe_link_targets_are_refused(href: str) -> None:
    assert not safe_href(href)
    assert "href" not in md(f"[x]({href})")


@pytest.mark.parametrize("href", ["#group-0", "plots/a.png", "checkpoints/r0/best.ckpt", "./a:b"])
def test_relative_links_inside_the_folder_stay(href: str) -> None:
    assert safe_href(href)
    assert f'href="{href}"' in md(f"[x]({href})")


def test_markdown_raw_html_is_escaped_block_and_inline() -> None:
    out = md(f"{SCRIPT}\n\n- item {IMG} <b onclick=x>b</b>\n\n<div>\n{SCRIPT}\n</div>")
    assert "<script" not in out and "<img" not in out and "<b " not in out and "<div" not in out
