"""How each run gets its own process: forked from a pre-imported server, or spawned cold.

Both give a run a fresh process (own pid, allocator, threads, peak memory, CUDA context); they differ
in what the run pays before it starts. ``spawn`` starts ``python -m harness.worker``, which imports
torch, Lightning and the harness again for every run (~5 s on an idle 2-core machine, 13-17 s on a busy
one, ~11 s on the H200 machine). ``fork`` imports them once per invocation in ``harness.executors.zygote`` and
forks a child per run. Fork is the default on Linux; spawn is used elsewhere, for a run fork cannot
serve (a multi-process DDP run keeps Lightning's own launcher, which starts ``sys.argv`` again), and
when the fork server cannot start or reports a hazard: each row records its isolation and, when it
did not get the one asked for, why.

Kept free of heavy imports: this runs in the harness's own process.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.executors.lifeline import PARENT_ENV
from harness.executors.scratch import SCRATCH_ENV
from harness.spec import RunSpec

ISOLATIONS = ("fork", "spawn")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 600.0  # imports on a loaded machine have taken 60 s; a hung server must not hang the harness


def default_isolation() -> str:
    return "fork" if sys.platform.startswith("linux") else "spawn"


def check_isolation(name: str) -> str:
    from harness.errors import UserError

    if name not in ISOLATIONS:
        raise UserError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {name!r}")
    return name


def child_env() -> dict[str, str]:
    """The parent's environment, with this project importable even when it is not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[PARENT_ENV] = str(os.getpid())  # the worker dies with this process (harness.executors.lifeline)
    return env


def fork_refusal(spec: RunSpec) -> str:
    """Why a forked child cannot run this spec; "" when it can."""
    if spec.devices > 1 or spec.num_nodes > 1 or "ddp" in spec.strategy:
        return "a multi-process run keeps Lightning's own launcher (spawned)"
    return ""


@dataclass(frozen=True)
class Job:
    """One worker invocation: the files it reads and writes, and the environment it runs with."""

    spec_path: Path
    result_path: Path
    log_path: Path
    plain: bool
    env: dict[str, str]
    cwd: str = ""  # the harness's working directory (an imported module may be found through it)


class Launcher(Protocol):
    name: str

    def run(self, job: Job, timeout_s: float | None) -> int | None:
        """Run the job to its end; the exit code (negative: killed by that signal), None on a timeout."""
        ...


class Spawn:
    """A cold ``python -m harness.worker`` per run."""

    name = "spawn"

    def run(self, job: Job, timeout_s: float | None) -> int | None:
        command = [sys.executable, "-m", "harness.worker", *(["--plain"] if job.plain else []), str(job.spec_path), str(job.result_path)]
        with job.log_path.open("w") as log:
            try:
                completed = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=job.env, timeout=timeout_s, check=False,
                )
            except subprocess.TimeoutExpired:
                return None
        return completed.returncode


class ForkServerError(RuntimeError):
    """The fork server could not start, died, or refused to fork; the message says which."""


class ForkServer:
    """The client of one ``python -m harness.executors.zygote``: started at the first run, restarted when needed.

    A server is restarted when the environment a run would get differs from the one it was started
    with (libraries read some variables at import) and after it died. ``close`` ends it (also as a
    context manager).
    """

    name = "fork"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.cwd = ""
        self.info: dict[str, Any] = {}
        self._buffer = b""

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, env: dict[str, str], cwd: str = "") -> dict[str, Any]:
        """Start a server with ``env`` in ``cwd`` and wait until it has imported everything; its ready message."""
        self.close()
        cwd = cwd or os.getcwd()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "harness.executors.zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, env=env, cwd=cwd,
            )
        self.env, self.cwd, self._buffer = dict(env), cwd, b""
        message = self._read(time.monotonic() + SERVER_START_TIMEOUT_S)
        if message is None or "ready" not in message:
            error = (message or {}).get("error") or f"it did not start (see {self.log_path})"
            self.close()
            raise ForkServerError(f"fork server: {error}")
        self.info = message
        return message

    def run(self, job: Job, timeout_s: float | None) -> int | None:
        cwd = job.cwd or os.getcwd()
        if not self._alive() or _shared(job.env) != _shared(self.env) or cwd != self.cwd:
            # what a cold Python would have read at import: the run's env (less its scratch folder, which
            # is that run's only and removed after it), its cwd
            self.start({key: value for key, value in job.env.items() if key != SCRATCH_ENV}, cwd)
        assert self.process is not None and self.process.stdin is not None
        request = {"spec": str(job.spec_path), "result": str(job.result_path), "log": str(job.log_path), "plain": job.plain, "env": job.env}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError as error:
            self.close()
            raise ForkServerError("fork server: it exited before the run started") from error
        started = self._read(time.monotonic() + 60.0)
        if started is None or "started" not in started:
            error = (started or {}).get("error", "it did not answer")
            self.close()
            raise ForkServerError(f"fork server: {error}")
        pid = int(started["started"])
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        try:
            finished = self._read(deadline)
            if finished is None and self._alive():  # the run's timeout
                _kill(pid)
                if self._read(time.monotonic() + 60.0) is None:  # the server reaps the child and reports it
                    self.close()
                return None
        except BaseException:  # Ctrl-C (or SIGTERM made one): the run in progress goes, the harness decides the rest
            _kill(pid)
            self.close()
            raise
        if finished is None or finished.get("pid") != pid:
            self.close()
            raise ForkServerError("fork server: it died while a run was in progress")
        return int(finished["exit"])

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _read(self, deadline: float | None) -> dict[str, Any] | None:
        """The server's next message; None at the deadline or when the server closed its stdout."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if not selector.select(wait):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


# set for each child (its parent's pid, its run's scratch folder): the child gets them, the server is not restarted for them
PER_RUN_ENV = (PARENT_ENV, SCRATCH_ENV)


def _shared(env: dict[str, str]) -> dict[str, str]:
    """``env`` without what is the run's own (PER_RUN_ENV): what the server's environment must equal."""
    return {key: value for key, value in env.items() if key not in PER_RUN_ENV}


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
