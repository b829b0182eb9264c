"""Disk full, read-only folders and paths that are not folders: one line naming the path and the cause, exit 2.

These tests run as root on CI machines, where a chmod'ed folder stays writable, and mounting a small
tmpfs needs privileges a container may lack. So: a path under a regular file gives a real ENOTDIR; a
read-only file system (EROFS) and a full disk (ENOSPC) are raised by a patched writer in-process; and
one end-to-end run goes under a file-size limit (``RLIMIT_FSIZE``) in a subprocess, which the workers
inherit and which needs no privileges: the kernel then fails the first write past the limit with EFBIG
(Python ignores SIGXFSZ, and the test makes sure of it), exactly where a full disk would fail.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import describe
from harness.runfolder.rundir import RESULTS, write_plan
from harness.spec import Result, RunSpec
from harness.testing import tiny_spec

ROOT = Path(__file__).resolve().parent.parent
RUN = ["run", "--tricks", "none", "--repeats", "1", "--accelerator", "cpu", "--dataset", "digits", "--max-epochs", "1", "--quiet"]


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("harness: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("under", ["", "sub"])
def test_out_that_is_a_file_is_one_line(tmp_path: Path, under: str, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = afile / under if under else afile
    assert main([*RUN, "--out", str(out)]) == 2
    line = one_line(capsys)
    assert str(afile) in line and "Not a directory" in line and "a file, not a folder" in line, line
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize(("code", "cause"), [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_out_in_a_read_only_place_is_one_line(
    tmp_path: Path, code: int, cause: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root no folder refuses a mkdir, so the kernel's answer for a read-only mount or a folder of
    another user is raised by a patched os.mkdir (pathlib's mkdir calls it)."""
    def refuse(path: Any, mode: int = 0o777, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    assert main([*RUN, "--out", str(tmp_path / "ro")]) == 2
    line = one_line(capsys)
    assert str(tmp_path / "ro") in line and cause in line, line


def finished_folder(tmp_path: Path) -> Path:
    """A run folder with one finished row (made up, no training): enough for report and resume."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spec = tiny_spec(run_dir)
    write_plan(run_dir, [spec], "test")
    row = Result(run_id=spec.run_id, trick=spec.label, workload=spec.workload, dataset=spec.dataset,
                 accelerator=spec.accelerator, repeat=0, status="failed", reason="made up", seed=spec.seed)
    (run_dir / RESULTS).write_text(row.to_json() + "\n")
    return run_dir


def read_only(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> None:
    """Every open for writing inside run_dir fails with EROFS, as on a read-only mount (root ignores chmod)."""
    real_os_open, real_open = os.open, io.open

    def refused(path: Any) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and Path(os.fsdecode(path)).resolve().is_relative_to(run_dir.resolve())

    def erofs(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if refused(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise erofs(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if refused(file) and set(mode) & set("wax+"):
            raise erofs(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_os_open)  # the lock file
    monkeypatch.setattr(io, "open", fake_open)  # pathlib
    monkeypatch.setattr(builtins, "open", fake_open)  # everything else


@pytest.mark.parametrize("command", ["resume", "report"])
def test_a_read_only_run_folder_is_one_line(
    tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = finished_folder(tmp_path)
    before = (run_dir / RESULTS).read_text()
    read_only(monkeypatch, run_dir)
    assert main([command, str(run_dir), *(["--retry-failed"] if command == "resume" else [])]) == 2
    line = one_line(capsys)
    assert str(run_dir) in line and "Read-only file system" in line, line
    assert (run_dir / RESULTS).read_text() == before


def test_a_full_disk_in_the_parent_keeps_finished_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent's second append meets ENOSPC: one line naming results.jsonl, the first row kept, exit 2."""
    import contextlib

    import harness.executors.runner as runner
    import harness.spec as spec_module

    def fake_run_one(spec: RunSpec, run_dir: Path, timeout_s: float | None, using: object = None) -> Result:
        return Result(run_id=spec.run_id, trick=spec.label, workload=spec.workload, dataset=spec.dataset,
                      accelerator=spec.accelerator, repeat=spec.repeat, status="ok", seed=spec.seed, wall_s=1.0)

    appended: list[str] = []
    real_append = spec_module.append_row

    def full_after_one(path: Path, result: Result) -> None:
        if appended:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_append(path, result)
        appended.append(result.run_id)

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    monkeypatch.setattr(runner, "launchers", lambda isolation, run_dir: contextlib.nullcontext(None))
    monkeypatch.setattr(runner, "append_row", full_after_one)
    assert main([*RUN, "--tricks", "grad-clipping", "--out", str(tmp_path)]) == 2
    line = one_line(capsys)
    results = next(tmp_path.glob("run-*")) / RESULTS
    assert f"'{results}': No space left on device (the disk is full)" in line, line
    assert "kept" in line and "resume" in line, line
    rows = [json.loads(text) for text in results.read_text().splitlines()]
    assert [row["run_id"] for row in rows] == appended


def test_a_run_that_meets_a_full_disk_is_a_failed_row_that_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint write in the worker hits ENOSPC: the row is failed and its reason says no space, and where."""
    from lightning.fabric.plugins.io import torch_io

    from harness.worker import execute

    def no_space(checkpoint: object, path: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch_io, "_atomic_save", no_space)
    result = execute(tiny_spec(tmp_path, max_epochs=1))
    assert result.status == "failed"
    assert result.reason.startswith("no space to write: ") and "No space left on device" in result.reason, result.reason
    assert ".ckpt" in result.reason, result.reason


def test_describe_names_each_kind_of_no_space() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        line = describe(OSError(code, os.strerror(code), "/x/best.ckpt"))
        assert line.startswith("no space to write: '/x/best.ckpt': "), line


def limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, in this process and its workers
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_real_write_past_the_limit_end_to_end(tmp_path: Path) -> None:
    """A whole run under a 16 KiB file-size limit: the worker's checkpoint (~1 MiB) cannot be written, so the
    row fails and says so; the parent's report (report.html, ~20 KiB even for one failed row) cannot be written either, so it ends with
    one line, exit 2, and the row it wrote stays in results.jsonl."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "harness", *RUN, "--out", str(tmp_path)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300, preexec_fn=lambda: limit_file_size(16 * 1024),
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("harness: error: ") and "File too large" in last and "kept in" in last, last
    run_dir = next(tmp_path.glob("run-*"))
    assert f"'{run_dir}/" in last, last  # a write to an open file carries no name: the folder stands for it
    rows = [json.loads(text) for text in (run_dir / RESULTS).read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "failed", rows
    assert rows[0]["reason"].startswith("no space to write: ") and "File too large" in rows[0]["reason"], rows[0]["reason"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run folder: one baseline run of one epoch, with its checkpoints, for predict and export."""
    from harness.worker import execute

    folder = tmp_path_factory.mktemp("trained")
    spec = tiny_spec(folder, max_epochs=1)
    write_plan(folder, [spec], "test")
    result = execute(spec)
    assert result.status == "ok", result.reason
    (folder / RESULTS).write_text(result.to_json() + "\n")
    return folder


@pytest.mark.parametrize("command", [["predict"], ["export", "--format", "torchscript"]])
@pytest.mark.parametrize(("out", "cause"), [("afile/x.pt", "not a folder"), ("adir", "Is a directory")])
def test_a_bad_predict_or_export_out_is_one_line(
    trained: Path, tmp_path: Path, command: list[str], out: str, cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    assert main([*command, str(trained), "--trick", "baseline", "--out", str(tmp_path / out)]) == 2
    line = one_line(capsys)
    assert cause in line and str(tmp_path / out.split("/")[0]) in line, line


def test_a_worker_that_died_on_a_full_disk_without_a_log_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No result file and no log (neither could be written): the row names the full disk, the parent does not crash."""
    import shutil
    from collections import namedtuple

    import harness.executors.runner as runner
    from harness.executors.isolation import Job

    spec = tiny_spec(tmp_path)
    job = Job(tmp_path / "spec.json", tmp_path / "result.json", tmp_path / "absent.log", False, {})
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100, 100, 0))
    row = runner._result(spec, tmp_path, job, 1, None)
    assert row.status == "failed"
    assert row.reason.startswith(f"no space left on the disk of '{tmp_path}'"), row.reason
    assert "(no log: " in row.reason and "absent.log" in row.reason, row.reason


def test_an_export_that_meets_a_full_disk_names_its_file(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk met while the exporter writes its open file raises without a file name; the line names the export."""
    import torch

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.jit, "save", full_disk)
    out = tmp_path / "model.pt"
    assert main(["export", str(trained), "--trick", "baseline", "--format", "torchscript", "--out", str(out)]) == 2
    line = one_line(capsys)
    assert f"'{out}': No space left on device (the disk is full)" in line, line
