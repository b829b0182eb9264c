"""A run's files, shipped home from a node that does not see the driver's run folder.

On a cluster without a shared ``--out``, a Ray task runs its run in a folder of its own on its node,
packs what the run wrote (its log, TensorBoard events, checkpoints, spec, profiles) into one tar
archive in memory, and returns it with the row; the driver unpacks it into the run folder, where
every later command (report, predict, export, resume) finds the files as after a local run.

The archive comes from another machine, so it is untrusted input like any run folder: the driver
extracts nothing unless every member is a plain file or folder inside a sub-folder of the run folder
(no absolute path, no ``..``, no link, no device, nothing at the run folder's top level such as
``results.jsonl`` or ``plan.json``, no hidden top-level folder), and then extracts with tarfile's
``data`` filter as well. Kept free of Ray and torch: the checks are tested without either.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

# What a run writes under its run folder (runner.run_one, the worker, Lightning's loggers and checkpoints):
# a shipped archive may hold these top-level folders only, so a node cannot write the driver's own files.
RUN_FOLDERS = ("logs", "specs", "tb", "checkpoints", "profiles", "artifacts", "lightning_logs")


class ShippedFilesRefused(ValueError):
    """A shipped archive the driver does not unpack; the message names the first bad member."""


def pack_run_files(run_dir: Path) -> bytes:
    """Every file a run wrote under ``run_dir`` (a task's own run folder, its RUN_FOLDERS) as an
    uncompressed tar archive.

    Uncompressed: checkpoints, most of the bytes, do not compress, and the node's CPU is the run's. The
    archive is held in memory; a run's files are what it returns, as its row is.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(p for folder in RUN_FOLDERS for p in (run_dir / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.add(path, arcname=path.relative_to(run_dir).as_posix(), recursive=False)
    return buffer.getvalue()


def member_refusal(member: tarfile.TarInfo) -> str:
    """Why ``member`` may not be unpacked into a run folder; "" when it may."""
    name = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()):
        return f"{member.name!r} is not a plain file or folder"
    if name.is_absolute() or ".." in name.parts or "\\" in member.name or "\0" in member.name:
        return f"{member.name!r} would leave the run folder"
    if len(name.parts) < 2 and not member.isdir():
        return f"{member.name!r} is at the run folder's top level, where only the driver writes"
    if name.parts[0] not in RUN_FOLDERS:
        return f"{member.name!r} is not under one of the folders a run writes ({', '.join(RUN_FOLDERS)})"
    return ""


def unpack_run_files(archive_bytes: bytes, run_dir: Path) -> int:
    """Unpack a task's shipped files into ``run_dir``; the number of files written.

    All or nothing: every member is checked before the first is written, and any bad one refuses the
    whole archive (ShippedFilesRefused), since a node that sends one crafted path may have crafted others.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:") as archive:
            members = archive.getmembers()
            for member in members:
                refusal = member_refusal(member)
                if refusal:
                    raise ShippedFilesRefused(refusal)
            archive.extractall(run_dir, members=members, filter="data")
    except (tarfile.TarError, OSError) as error:
        if isinstance(error, tarfile.FilterError):
            raise ShippedFilesRefused(str(error)) from None
        if isinstance(error, tarfile.TarError):
            raise ShippedFilesRefused(f"not a tar archive: {error}") from None
        raise
    return sum(1 for member in members if member.isfile())
