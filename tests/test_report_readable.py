"""The report can be read: narrow tables, notes said once and wrapped, no false "best", no colour for
memory noise, an HTML page that fits a window, a clean log when output is piped, labels that do not overlap."""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.text import Text

from harness.commands.run_cmd import run_with_progress
from harness.measuring.contention import contention_warning
from harness.report import write_report
from harness.report.build import build_report
from harness.report.plots import pareto_figure, throughput_memory_figure, trick_colors
from harness.report.table import cell_marks, display_table, summary_frame
from harness.report.text import protocol_text
from harness.spec import Result

MiB = 2**20
LONG_SKIP = ("16-mixed needs a CUDA GPU: on a CPU Lightning silently runs bf16-mixed instead, so this row would "
             "measure bf16 under a float16 label (see the bf16-mixed row)")
LR_WARNING = ("lr-finder: the suggested lr 6.31e-06 is not on the loss's descent (the smoothed loss still rises to lr "
              "3.31e-05 before it falls; Lightning issues 14167, 21141); see lr_curve_png, or narrow the search with "
              "lr-finder.min_lr")


def row(trick: str, speed: float = 10_000.0, *, workload: str = "autoencoder", status: str = "ok", reason: str = "",
        mem_mib: float = 848.0, mem_kind: str = "max_rss", share: float | None = None, blocks: int = 8,
        warnings: list[str] | None = None, repeat: int = 0, **details) -> Result:
    """A realistic row of the main job; ``share``: other processes' share of the CPUs during its fit."""
    ok = status == "ok"
    found = list(warnings or [])
    if share is not None:
        found.append(contention_warning(share, window_cpu_s=10.0, threads=2, cpus=2))
    rates = [speed * (1 + 0.01 * (i % 3 - 1)) for i in range(blocks)] if ok and blocks > 1 else [speed] * blocks * ok
    return Result(
        run_id=f"{workload}-cpu-{trick}-r{repeat}", trick=trick, workload=workload, dataset="digits", accelerator="cpu",
        repeat=repeat, status=status, reason=reason, device_name="AMD EPYC", precision="32-true" if ok else "",
        batch_size=64, loader="device", samples_per_s=speed if ok else None, samples_per_s_iqr=speed * 0.02 if ok else None,
        step_time_ms=64_000 / speed if ok else None, noisy=False if ok else None,
        peak_mem_bytes=int(mem_mib * MiB) if ok else None, mem_kind=mem_kind if ok else "",
        train_loss=0.05 if ok else None, val_loss=0.047 if ok else None, test_loss=0.046 if ok else None,
        wall_s=0.5 if ok else 0.1, fit_s=0.3 if ok else None, tune_s=0.0, steps=54 if ok else None,
        optimizer_steps=54 if ok else None, epochs=3 if ok else None, blocks_measured=blocks if ok else None,
        block_samples_per_s=rates, flops_per_s=1.9e10 if ok else None, seed=42,
        details={"warnings": found, "test_weights": "best.ckpt (epoch 2, val_loss 0.047)", **details} if found or ok
        else details,
        curve=[{"epoch": 0, "step": 18, "samples": 1150, "train_s": 0.1, "fit_s": 0.1, "val_loss": 0.047}] if ok else [],
    )


def main_job(workload: str = "autoencoder") -> list[Result]:
    """Every trick of the main job on a busy machine: each ok row carries its own contention warning."""
    return [
        row("baseline", 36_826, workload=workload, share=0.49),
        row("16-mixed", workload=workload, status="skipped", reason=LONG_SKIP),
        row("batch-size-finder", 95_306, workload=workload, share=0.31, mem_mib=872),
        row("bf16-mixed", 31_363, workload=workload, share=0.22, mem_mib=865),
        row("bf16-true", 32_812, workload=workload, share=0.40, mem_mib=863),
        row("early-stopping", 34_779, workload=workload, share=0.18),
        row("grad-accumulation", 47_641, workload=workload, share=0.20),
        row("grad-clipping", 31_981, workload=workload, share=0.27),
        row("lr-finder", 36_534, workload=workload, share=0.44, warnings=[LR_WARNING]),
        row("swa", 35_000, workload=workload, share=0.35),
        row("bf16-mixed+grad-clipping", 30_000, workload=workload, share=0.25),
        row("cpu-threads", 20_000, workload=workload, share=0.16),
    ]


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("|", "trick ", "----")) or re.match(r"^\S+ +(ok|skipped|failed) ", line)]


def test_terminal_and_markdown_tables_stay_narrow_for_the_main_job(tmp_path: Path) -> None:
    results = main_job() + main_job("cnn")
    terminal = write_report(tmp_path, results, env={})
    markdown = (tmp_path / "report.md").read_text()
    assert max(len(line) for line in terminal.splitlines()) <= 125, max(terminal.splitlines(), key=len)
    assert max(len(line) for line in table_lines(markdown)) <= 140, max(table_lines(markdown), key=len)
    # the terminal has the main columns only; the rest is still in report.md
    header = next(line for line in terminal.splitlines() if line.startswith("trick "))
    assert "samples/s" in header and "val loss" in header and "FLOP/s" not in header and "opt steps" not in header
    assert "FLOP/s" in markdown and "opt steps" in markdown and "test loss" in markdown
    # the long skip reason is a wrapped note, not a table cell
    assert LONG_SKIP not in "\n".join(table_lines(markdown))
    assert "\n[2] 16-mixed needs a CUDA GPU: on a CPU" in terminal
    note_lines = [line for line in terminal.splitlines() if line.startswith(("[", "    "))]
    assert len(note_lines) > 3 and max(len(line) for line in note_lines) <= 100  # wrapped


def test_the_contention_warning_is_said_once_per_group(tmp_path: Path) -> None:
    results = main_job() + main_job("cnn")
    terminal = write_report(tmp_path, results, env={})
    # the tables' part of each page (each trick's own details, further down, list its own warnings)
    markdown = (tmp_path / "report.md").read_text().split("## What each trick did")[0]
    page = (tmp_path / "report.html").read_text().split('<h2 id="details">')[0]
    for text in (terminal, markdown, page):
        flat = re.sub(r"\s+", " ", text)
        assert flat.count("other processes used") == 2  # one per group (autoencoder, cnn), not one per row
        assert flat.count("Oversubscribed") == 2
        assert "baseline 49%" in flat and "cpu-threads 16%" in flat  # every row's own share is still there
    summary = summary_frame(results)
    ae = summary[summary["workload"] == "autoencoder"].reset_index(drop=True)
    notes = dict(zip(ae["trick"], display_table(ae)["note"]))
    assert notes["baseline"] == notes["grad-clipping"] == notes["cpu-threads"] == "[1]"  # one note, every contended row
    assert notes["16-mixed"] == "[2]" and notes["lr-finder"] == "[3, 1]"


def test_a_row_measured_on_one_block_is_too_short_and_never_best(tmp_path: Path) -> None:
    warmup = "only 1 block(s) measured: warm-up included; raise the budget or lower --block-steps"
    results = [row("baseline", 10_000), row("quick", 90_000, blocks=1, measure_warning=warmup), row("fast", 12_000)]
    summary = summary_frame(results)
    marks = cell_marks(summary).set_axis(summary["trick"])
    table = display_table(summary).set_axis(summary["trick"])
    assert marks.loc["quick", "samples/s"] == "short" and marks.loc["quick", "ms/batch"] == "short"
    assert marks.loc["fast", "samples/s"] == "best" and marks.loc["baseline", "samples/s"] == "worst"
    assert table.loc["quick", "samples/s"] == "90,000 (9.00x) too short"  # no "±0%"
    assert bool(summary.set_index("trick").loc["quick", "too_short"])

    write_report(tmp_path, results, env={})
    markdown = (tmp_path / "report.md").read_text()
    assert "| 90,000 (9.00x) too short " in markdown and "**90,000" not in markdown
    assert re.search(r'<td [^>]*class="[^"]*\bshort\b[^"]*"[^>]*>90,000 \(9\.00x\) too short', (tmp_path / "report.html").read_text())


def test_memory_within_its_noise_band_is_not_coloured(tmp_path: Path) -> None:
    cpu = [row("baseline", mem_mib=848), row("bf16-mixed", mem_mib=865), row("bf16-true", mem_mib=872)]  # 1.02x, 1.03x
    summary = summary_frame(cpu)
    assert (cell_marks(summary)["peak mem MiB"] == "").all()
    figure = throughput_memory_figure(summary, "cpu")
    memory_bars = figure.axes[1].patches
    assert {to_hex(bar.get_facecolor()) for bar in memory_bars} == {"#555555"}  # all grey

    bigger = cpu + [row("swa", mem_mib=1200)]  # 1.42x: outside the band
    marks = cell_marks(summary_frame(bigger)).set_axis([r.trick for r in bigger])
    assert marks.loc["swa", "peak mem MiB"] == "worst"

    gpu = [row("baseline", mem_mib=1000, mem_kind="cuda_max_allocated"), row("bf16", mem_mib=1030, mem_kind="cuda_max_allocated")]
    marks = cell_marks(summary_frame(gpu)).set_axis(["baseline", "bf16"])
    assert marks.loc["bf16", "peak mem MiB"] == "worst"  # CUDA's allocator figure repeats exactly: 3% is real

    write_report(tmp_path, cpu, env={})
    assert "5% for a CPU's max RSS" in (tmp_path / "report.html").read_text()  # the legend says the band
    assert "5% for a CPU's max RSS" in (tmp_path / "report.md").read_text()


class Page(HTMLParser):
    """Start tags with attributes, the CSS, and the text inside each results table."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.css = ""
        self.results_text: list[str] = []
        self._in_style = False
        self._results_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_style = tag == "style"
        if tag == "table" and "results" in (attributes.get("class") or ""):
            self._results_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._results_depth:
            self._results_depth -= 1
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css += data
        if self._results_depth:
            self.results_text.append(data)


def test_the_html_table_fits_a_window_and_keeps_notes_out_of_the_rows(tmp_path: Path) -> None:
    write_report(tmp_path, main_job(), env={})
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    css = re.sub(r"\s+", " ", page.css)
    # nothing that forces a width past the window: no nowrap, no scroll box, no fixed table width
    assert "nowrap" not in css and "overflow-x" not in css and "min-width: 18rem" not in css
    assert not any("style" in attrs and "width" in (attrs["style"] or "") for tag, attrs in page.tags if tag in ("table", "td", "th"))
    assert re.search(r"table \{[^}]*max-width: 100%", css)
    assert re.search(r"td \{[^}]*overflow-wrap: anywhere", css)  # a long token breaks instead of widening the table
    assert not any("scroll" in (attrs.get("class") or "") for _, attrs in page.tags)
    # at most 9 columns side by side in any results table
    header_cells = (tmp_path / "report.html").read_text().split('<table id="T_group0" class="results">')[1].split("</tr>")[0]
    assert header_cells.count("<th") <= 9
    # the notes live in a numbered list under the table; the rows hold only "[n]"
    cells = " ".join(page.results_text)
    assert "16-mixed needs a CUDA GPU" not in cells and "other processes used" not in cells and "[1]" in cells
    assert any(tag == "ol" and attrs.get("class") == "notes" for tag, attrs in page.tags)


def test_notes_are_escaped_in_the_html(tmp_path: Path) -> None:
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    write_report(tmp_path, [row("baseline"), row("evil", status="failed", reason=payload)], env={})
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def spec(label: str) -> SimpleNamespace:
    """What the runner's loop reads of a RunSpec (running it is faked)."""
    return SimpleNamespace(run_id=f"autoencoder-cpu-{label}-r0", label=label, workload="autoencoder", accelerator="cpu")


def test_piped_output_has_no_progress_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("harness.executors.runner.run_one", lambda s, run_dir, timeout_s=None, **launch: row(s.label))
    specs = [spec("baseline"), spec("grad-clipping")]
    run_with_progress(specs, tmp_path / "piped", None, quiet=False)
    err = capsys.readouterr().err
    assert "\r" not in err and "|" not in err  # stderr is not a terminal here: no bar, no carriage returns
    assert [line.split()[:2] for line in err.splitlines()] == [["ok", "baseline"], ["ok", "grad-clipping"]]

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # on a terminal the bar is back
    run_with_progress(specs, tmp_path / "tty", None, quiet=False)
    assert "\r" in capsys.readouterr().err


def test_pareto_labels_do_not_overlap() -> None:
    tricks = ["baseline", "grad-clipping", "bf16-mixed", "bf16-true", "16-mixed", "cpu-threads", "swa", "early-stopping",
              "lr-finder", "grad-accumulation", "batch-size-finder"]
    summary = pd.DataFrame({  # most rows on one spot: tricks that changed neither time nor loss
        "trick": tricks,
        "wall_s": [0.50, 0.51, 0.50, 0.52, 0.505, 0.49, 0.9, 0.8, 1.0, 0.5, 3.2],
        "val_loss": [0.047, 0.047, 0.047, 0.0472, 0.047, 0.0471, 0.05, 0.038, 0.21, 0.142, 0.186],
    })
    figure = pareto_figure(summary, "t", trick_colors(tricks))
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    labels = [t for t in axes.texts if t.get_text() in tricks]
    assert sorted(t.get_text() for t in labels) == sorted(tricks)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (labels[boxes.index(a)].get_text(), labels[boxes.index(b)].get_text())


def test_the_lr_finder_figure_has_a_human_caption(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "lr_find.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    results = [row("baseline"), row("lr-finder", found_lr=6.31e-6, lr_curve_png="artifacts/lr_find.png")]
    report = build_report(tmp_path, results, {}, draw=False)
    (image,) = next(d for d in report.details if d.trick == "lr-finder").images
    assert "_png" not in image.title and "learning rate" in image.title
    assert "6.31e-06" in image.caption
    write_report(tmp_path, results, env={})
    assert "lr-finder: lr_curve_png." not in (tmp_path / "report.html").read_text()


def test_how_this_was_measured_names_the_weights_the_test_used() -> None:
    assert "test = `Trainer.test` on `best.ckpt`" in protocol_text([row("baseline"), row("grad-clipping")])
    mixed = [row("baseline"), row("swa", test_weights="final.ckpt: SWA averages")]
    text = protocol_text(mixed)
    assert "`best.ckpt` (the best epoch by the monitored val metric) for baseline" in text
    assert "`final.ckpt`" in text and "for swa" in text
    assert "the final weights" in protocol_text([row("baseline", test_weights="final weights (--no-checkpoints)")])
