"""A per-run scratch folder that the harness, not the run, owns and removes.

A run's worker may need a private folder in the temp dir (the ``compile`` trick's cold inductor and
Triton caches, hundreds of MB on a GPU). A worker that cleans up after itself leaves the folder behind
whenever it does not reach its cleanup: a timeout, SIGKILL, the OOM killer, Ctrl-C, a cancelled Ray
task. So the process that starts the worker creates the folder (:func:`run_scratch`), names it in the
worker's environment (``$HARNESS_RUN_SCRATCH``) and removes it once the worker has ended, however it
ended. A harness that is itself SIGKILLed cannot do that: its folders carry its pid, and the next
harness on the machine removes those whose process is gone (:func:`sweep_stale_scratch`).

Kept free of heavy imports: this runs in the harness's own process.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

SCRATCH_ENV = "HARNESS_RUN_SCRATCH"
SCRATCH_PREFIX = "harness-scratch-"
# mkdtemp's names: prefix + 8 characters of tempfile's alphabet
_SCRATCH_NAME = re.compile(r"harness-scratch-([0-9]{1,10})-.+-[a-z0-9_]{8}")
# the compile trick's own folders before the scratch folder existed; they carry no pid, only an age
_OLD_INDUCTOR_NAME = re.compile(r"harness-inductor-.+-[a-z0-9_]{8}")
OLD_INDUCTOR_AGE_S = 24 * 3600.0


def scratch_prefix(run_id: str, pid: int | None = None) -> str:
    """The name a scratch folder starts with: the owning process's pid (see :func:`sweep_stale_scratch`) and the run."""
    return f"{SCRATCH_PREFIX}{os.getpid() if pid is None else pid}-{run_id}-"


@contextmanager
def run_scratch(run_id: str) -> Iterator[str]:
    """A fresh scratch folder for one run, removed on leaving, whatever happened inside.

    The caller runs the worker inside the ``with`` and hands it the path (``SCRATCH_ENV``); the
    worker may be gone without cleaning anything, but this process is not, so the folder goes here.
    "" when the temp dir has no room or no permission for it: the run goes on without one (a run that
    needs a temp folder then fails as a row of its own, not the whole sweep).
    """
    try:
        path = tempfile.mkdtemp(prefix=scratch_prefix(run_id))
    except OSError:
        yield ""
        return
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine); when unsure, it is taken to be alive."""
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _stale(name: str, info: os.stat_result, now: float) -> bool:
    """Whether ``name`` (lstat ``info``) in the temp dir is one of our run folders whose owner is gone."""
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():  # a symlink is not a directory to lstat
        return False
    match = _SCRATCH_NAME.fullmatch(name)
    if match:
        return not _pid_alive(int(match.group(1)))
    return _OLD_INDUCTOR_NAME.fullmatch(name) is not None and now - info.st_mtime > OLD_INDUCTOR_AGE_S


def sweep_stale_scratch(folder: str | None = None) -> list[str]:
    """Remove the scratch folders that a killed harness (or worker) left in the temp dir; their paths.

    Only what is clearly ours and clearly dead: a real directory (never a symlink, never followed),
    owned by this user, named exactly as :func:`run_scratch` names them with a pid that no live process
    has; and the compile trick's old ``harness-inductor-*`` folders untouched for a day. One listdir;
    a folder that cannot be listed or removed is left as it is (this must never stop a sweep of runs).
    """
    if os.name != "posix":  # elsewhere os.kill(pid, 0) is no question (on Windows it sends CTRL_C_EVENT)
        return []
    folder = folder or tempfile.gettempdir()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    now, removed = time.time(), []
    for name in names:
        if not name.startswith((SCRATCH_PREFIX, "harness-inductor-")):
            continue
        path = os.path.join(folder, name)
        try:
            if not _stale(name, os.lstat(path), now):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)  # refuses a symlink put there since the lstat
        if not os.path.lexists(path):
            removed.append(path)
    return removed


def worker_scratch() -> str:
    """In a worker: the scratch folder the harness made for this run, or "" when there is none
    (a worker started by hand, or by a harness without one)."""
    path = os.environ.get(SCRATCH_ENV, "")
    return path if path and os.path.isdir(path) else ""
