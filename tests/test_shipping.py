"""A run's files shipped home from a Ray node (harness.executors.shipping): what a node packs arrives in
the run folder as it was, and an archive that would write anywhere else is refused whole. No Ray needed."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from harness.executors.shipping import RUN_FOLDERS, ShippedFilesRefused, pack_run_files, unpack_run_files


def write_run(folder: Path) -> dict[str, bytes]:
    """The files one run writes, and one the driver writes (results.jsonl), which a node must not ship."""
    files = {
        "logs/r0.log": b"log line\n",
        "specs/r0.json": b'{"run_id": "r0"}',
        "tb/autoencoder/cpu/baseline/events.out.tfevents.1": os.urandom(300),
        "checkpoints/r0/last.ckpt": os.urandom(5000),
        "profiles/r0/profile.txt": b"profile",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "results.jsonl").write_text("{}\n")
    (folder / "data").mkdir()
    (folder / "data" / "cache.pt").write_bytes(b"not a run's file")
    return files


def test_a_runs_files_arrive_as_they_were_written(tmp_path: Path) -> None:
    node, driver = tmp_path / "node", tmp_path / "driver"
    node.mkdir(), driver.mkdir()
    files = write_run(node)
    archive = pack_run_files(node)
    assert unpack_run_files(archive, driver) == len(files)
    arrived = {p.relative_to(driver).as_posix(): p.read_bytes() for p in driver.rglob("*") if p.is_file()}
    assert arrived == files  # the run's folders only: no results.jsonl, no data cache


def archive_with(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b"crafted"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("../outside.txt"), "would leave the run folder"),
        (member("logs/../../outside.txt"), "would leave the run folder"),
        (member("/tmp/absolute.txt"), "would leave the run folder"),
        (member("results.jsonl"), "top level, where only the driver writes"),
        (member(".harness.lock"), "top level"),
        (member("plots/x.png"), "not under one of the folders a run writes"),
        (member("checkpoints/r0/link.ckpt", tarfile.SYMTYPE, "/etc/passwd"), "not a plain file or folder"),
        (member("checkpoints/r0/hard.ckpt", tarfile.LNKTYPE, "/etc/passwd"), "not a plain file or folder"),
        (member("logs/device", tarfile.CHRTYPE), "not a plain file or folder"),
    ],
)
def test_an_archive_with_one_crafted_member_is_refused_whole(tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes], why: str) -> None:
    archive = archive_with(member("logs/r0.log"), bad, member("checkpoints/r0/last.ckpt"))
    with pytest.raises(ShippedFilesRefused, match=why):
        unpack_run_files(archive, tmp_path)
    assert not any(tmp_path.iterdir())  # all or nothing: not even the good members were written
    assert not (tmp_path.parent / "outside.txt").exists()


def test_a_link_in_the_run_folder_does_not_carry_shipped_files_out(tmp_path: Path) -> None:
    """A run folder whose ``logs`` is a symlink elsewhere (a crafted folder): tarfile's data filter refuses."""
    driver, elsewhere = tmp_path / "driver", tmp_path / "elsewhere"
    driver.mkdir(), elsewhere.mkdir()
    (driver / "logs").symlink_to(elsewhere)
    with pytest.raises(ShippedFilesRefused):
        unpack_run_files(archive_with(member("logs/r0.log")), driver)
    assert not any(elsewhere.iterdir())


def test_bytes_that_are_no_archive_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ShippedFilesRefused, match="not a tar archive"):
        unpack_run_files(b"\x00garbage" * 100, tmp_path)


def test_every_folder_a_run_writes_is_shipped() -> None:
    """The folders a run writes under the run folder (runner, worker, checkpoints, profiles, a trick's
    artefacts, TensorBoard) are all shipped; a new one must be added to RUN_FOLDERS or it stays on the node."""
    from harness.measuring.profiling import profile_dir
    from harness.runfolder.checkpoints import checkpoint_dir

    assert {checkpoint_dir("/r", "x").parts[2], profile_dir("/r", "x").parts[2]} <= set(RUN_FOLDERS)
    assert {"logs", "specs", "tb", "artifacts"} <= set(RUN_FOLDERS)
