"""Exceptions that carry a decision about how the harness reports a problem.

A :class:`UserError` is a mistake the user can fix (an unknown name, a bad flag, a GPU asked for
but absent): the CLI prints it as one line and exits 2, with no traceback. The others are raised
inside a run and turn into a row of the results table instead of stopping the whole job.
"""

from __future__ import annotations

import difflib
import errno
import os
import pickle
import re
from collections.abc import Iterable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


class TrickSkipped(Exception):
    """A trick cannot run in this setup (e.g. fp16 on a CPU); the row is marked skipped with the reason."""


class TrickFailed(Exception):
    """A trick ran but could not do its job (e.g. the LR finder found no suggestion); the row is marked failed."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite; the row is marked failed."""


# What a file-system error means for the user, where its strerror alone does not say
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
OS_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would pass the size limit (ulimit -f) or the file system's",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EROFS: "the file system is mounted read-only",
    errno.EACCES: "no permission",
    errno.EPERM: "no permission",
}


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes (torch puts some in its
    weights-only message): what a row's reason or a one-line report shows."""
    return (ANSI.sub("", str(error)).strip().splitlines() or [""])[0]


def rejected_global(error: BaseException) -> str | None:
    """The global that torch's weights-only unpickler refused ("Unsupported global: GLOBAL numpy...."), if named."""
    match = re.search(r"GLOBAL ([\w.]+)", ANSI.sub("", str(error)))
    return match.group(1) if match else None


def describe(error: BaseException, where: str | None = None) -> str:
    """One clean line for a row's reason: the exception's type and first line; for a weights-only refusal,
    whose first line is a generic preamble, the global it refused instead. ``where``: the folder a run
    writes in, named when a full disk's error does not name its file (a write to an open file does not)."""
    if isinstance(error, pickle.UnpicklingError):
        name = rejected_global(error)
        if name:
            return f"UnpicklingError: torch.load(weights_only=True) refused the global {name}"
        lines = [line.strip() for line in ANSI.sub("", str(error)).splitlines() if line.strip()]
        detail = next((line for line in lines if "nsupported" in line), lines[-1] if lines else "")
        return f"UnpicklingError: torch.load(weights_only=True) refused the file ({detail})"
    if isinstance(error, OSError) and error.errno in NO_SPACE:  # a run that failed for lack of space says so
        return f"no space to write: {os_error_line(error, where)}"
    return f"{type(error).__name__}: {first_line(error)}"


def os_error_line(error: OSError, where: str | os.PathLike[str] | None = None) -> str:
    """One line for a file-system error, naming the path and the cause (``'reports/x': Not a directory (...)``).

    A full disk, a read-only folder or an ``--out`` that is a file can meet any write the harness makes;
    the CLI turns each into this line and exit 2, instead of a traceback per place that writes. A write
    to a file already open raises without the file's name: ``where`` (the folder being written) then
    stands for it.
    """
    if error.filename is not None:
        path = repr(os.fsdecode(error.filename))
    else:
        path = "(no path)" if where is None else repr(os.path.join(os.fspath(where), "..."))
    if error.filename2 is not None:
        path += f" -> {os.fsdecode(error.filename2)!r}"
    cause = error.strerror or first_line(error) or type(error).__name__
    hint = OS_HINTS.get(error.errno) if error.errno is not None else None
    return f"{path}: {cause}" + (f" ({hint})" if hint and hint.lower() != cause.lower() else "")


def unknown_name_error(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UserError:
    """Build the standard 'unknown X' error: the bad value, the closest matches, where to look."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {', '.join(close)}?"
    else:
        message += f"; valid choices: {', '.join(choices) or '(none registered)'}"
    if hint:
        message += f" ({hint})"
    return UserError(message)
