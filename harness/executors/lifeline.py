"""Worker processes die with the process that started them.

A worker left running after its parent is gone (``kill -9``, a SIGTERM the parent could not pass
on, a lost session) keeps the CPU or GPU busy and races a ``resume`` started then. The parent puts
its pid in the child's environment; the child asks Linux to SIGKILL it when that parent exits
(``prctl(PR_SET_PDEATHSIG)``) and then checks that the parent is still the one that started it
(it may have died before the request). Kept free of heavy imports: the worker calls it first.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "HARNESS_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """SIGKILL this process when the parent named by $HARNESS_PARENT_PID exits; exit now if it already has.

    Does nothing when the variable is unset (a worker started by hand). Afterwards the variable names
    this process, so that its own children (the ranks of a ``ddp`` run, which rerun the worker) watch it.
    """
    expected = os.environ.get(PARENT_ENV, "")
    if not expected.isdigit():
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            print(f"harness.worker: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    if os.getppid() != int(expected):
        print(f"harness.worker: the harness process {expected} that started this worker is gone; exiting", file=sys.stderr)
        os._exit(1)
    os.environ[PARENT_ENV] = str(os.getpid())
