"""results.jsonl survives a crash mid-write: appends start on a fresh line, and every reader skips (and
names) a bad line instead of losing the file or raising."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.runfolder.rundir import RESULTS, write_plan
from harness.spec import Result, append_row, parse_results, read_results
from harness.testing import tiny_spec
from harness.worker import execute


def row(run_id: str, status: str = "ok") -> Result:
    return Result(run_id=run_id, trick=run_id, workload="autoencoder", dataset="digits", accelerator="cpu", repeat=0, status=status)


def test_an_append_after_a_half_written_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / RESULTS
    path.write_text(row("a").to_json() + "\n" + row("b").to_json()[:40])  # the crash cut row b short
    append_row(path, row("c"))
    assert [r.run_id for r in read_results(path)] == ["a", "c"]
    assert path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("bad", ['{"run_id": "x"', "[1, 2]", '"text"', "null", '{"run_id": "x"}',
                                  '{"run_id": 1, "trick": "t", "workload": "w", "dataset": "d", "accelerator": "cpu", "repeat": 0, "status": "ok"}',
                                  row("y").to_json().replace('"details": {}', '"details": []'), "\x00\xff garbage"])
def test_a_bad_line_is_skipped_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    path = tmp_path / RESULTS
    path.write_text(f"{row('a').to_json()}\n{bad}\n{row('b').to_json()}\n")
    assert [r.run_id for r in read_results(path)] == ["a", "b"]
    err = capsys.readouterr().err
    assert "line 2" in err and str(path) in err
    read_results(path)
    assert capsys.readouterr().err == ""  # named once per file


def test_arbitrary_bytes_never_raise() -> None:
    for text in ("{", "}\n{]", "1e999999", '{"a": NaN}', "\ud800", "[" * 10000):
        results, _ = parse_results(text)
        assert results == []


def test_truncated_last_row_then_resume_keeps_every_complete_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    specs = [tiny_spec(run_dir, max_epochs=1), tiny_spec(run_dir, ["grad-clipping"], max_epochs=1)]
    write_plan(run_dir, specs, "test")
    done = [execute(spec) for spec in specs]
    assert all(r.status == "ok" for r in done)
    whole, cut = done[0].to_json(), done[1].to_json()
    (run_dir / RESULTS).write_text(whole + "\n" + cut[: len(cut) // 2])  # crash mid-write of the second row

    assert main(["compare", str(run_dir), str(run_dir)]) == 0  # readers skip the half line
    assert main(["report", str(run_dir)]) == 0
    assert main(["resume", str(run_dir), "--quiet", "--retry-failed"]) == 0
    assert "line 2" in capsys.readouterr().err
    rows = read_results(run_dir / RESULTS)
    assert [r.trick for r in rows] == ["baseline", "grad-clipping"]
    assert json.loads((run_dir / RESULTS).read_text().splitlines()[0]) == json.loads(whole)  # kept as it was
    assert rows[1].status == "ok" and rows[1].steps > 0  # its last.ckpt was the budget's end: trained afresh, not 0 steps
    assert "at the end of the budget: trained afresh" in rows[1].details["resume_ignored"]
    assert main(["predict", str(run_dir), "--trick", "grad-clipping"]) == 0
