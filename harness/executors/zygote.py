"""The fork server: import torch, Lightning and the harness once, then fork one fresh child per run.

``python -m harness.executors.zygote`` is started once per invocation by :class:`harness.executors.isolation.ForkServer`.
It imports what every run imports (torch, Lightning, TensorBoard's writer, the worker, the parity
loop, every built-in and entry-point trick and workload), runs no torch operation, starts no thread of
its own and never touches CUDA, and then serves requests read from stdin, one JSON line each:

    {"spec": SPEC.json, "result": RESULT.json, "log": LOG, "plain": false, "env": {...}}

For each it checks that forking is still safe, forks, and answers on stdout with two JSON lines:
``{"started": PID}`` at once (so that the harness can kill the child on a timeout or Ctrl-C) and
``{"pid": PID, "exit": CODE}`` when the child is gone (CODE as ``subprocess``: negative for a signal).

The child is what ``python -m harness.worker`` is: its own pid, allocator, peak memory (reset at
fit start, harness.measuring.measure) and, on a GPU, its own CUDA context, created by the child itself. It gets
the request's environment, its stdout/stderr in the run's log, no stdin, SIGINT/SIGTERM as a
fresh Python has them, and dies with the server (``PR_SET_PDEATHSIG``, which fork clears).

What the server does hold, it holds for every child alike: two OpenBLAS thread servers that numpy's
and scipy's imports start (OpenBLAS registers ``pthread_atfork`` handlers that stop them before a
fork and start them again in the child) and the environment it was started with, which the libraries
read at import (``OMP_NUM_THREADS``, ``MALLOC_*``): the harness restarts the server when the
environment it would give a run differs from that one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from typing import Any

from harness.executors.lifeline import PARENT_ENV, die_with_parent


def preload() -> dict[str, Any]:
    """Import everything a run imports; return what a fork needs checked (see :func:`fork_hazard`)."""
    started = time.perf_counter()
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401

    import harness.parity  # noqa: F401
    import harness.worker  # noqa: F401
    from harness.trick import TRICKS
    from harness.workload import WORKLOADS

    TRICKS.load()
    WORKLOADS.load()
    try:  # Lightning's TensorBoardLogger imports it at its first write; every run writes one
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    return {"import_s": round(time.perf_counter() - started, 3), "threads": len(os.listdir("/proc/self/task"))}


def fork_hazard() -> str:
    """Why forking now would hand a child state it must not share; "" when it is safe."""
    import torch

    if torch.cuda.is_initialized():
        return "CUDA is initialised in the fork server"
    if any("libcuda.so" in line for line in _maps()):  # the driver is loaded: cuInit may have run
        return "the CUDA driver (libcuda.so) is loaded in the fork server"
    if threading.active_count() > 1:
        return f"the fork server runs {threading.active_count()} Python threads"
    return ""


def _maps() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            return maps.readlines()
    except OSError:
        return []


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run_child(request: dict[str, Any], server_pid: int) -> None:
    """In the forked child: become ``python -m harness.worker`` for this request, then exit."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[PARENT_ENV] = str(server_pid)  # the worker dies with the server, which dies with the harness
        from harness import worker

        args = [*(["--plain"] if request.get("plain") else []), request["spec"], request["result"]]
        sys.argv = [worker.__file__, *args]
        code = worker.main(args)
    except SystemExit as error:
        code = error.code if isinstance(error.code, int) else 1
    except BaseException:  # noqa: BLE001 (the child must never return into the server's loop)
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> int:
    """Read requests until stdin closes; one child at a time."""
    server_pid = os.getpid()
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        request = json.loads(line)
        hazard = fork_hazard()
        if hazard:
            _send({"error": hazard})
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request, server_pid)  # never returns
        _send({"started": pid})
        _, status = os.waitpid(pid, 0)
        _send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})
    return 0


def main() -> int:
    die_with_parent()  # the harness's pid is in the environment; children watch this process in turn
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the harness's to handle
    # Python 3.12+ warns on fork() in a process with native threads; the only ones here are OpenBLAS's,
    # which are fork-safe by their own atfork handlers (module docstring), and fork_hazard checks ours
    warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\) may lead to deadlocks", category=DeprecationWarning)
    try:
        info = preload()
    except BaseException as error:  # noqa: BLE001 (a broken plugin: the harness falls back and says why)
        _send({"error": f"the fork server could not import what runs need: {type(error).__name__}: {error}"})
        return 1
    hazard = fork_hazard()
    if hazard:
        _send({"error": hazard})
        return 1
    _send({"ready": os.getpid(), **info})
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
