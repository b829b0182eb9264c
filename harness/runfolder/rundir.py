"""A run folder as the later commands (resume, predict, export) find it.

``run`` writes ``plan.json`` (every RunSpec it planned, before the first run starts) next to
``results.jsonl`` (every finished Result). Together they say what was asked and what was done,
so ``resume`` can run what is missing and ``predict``/``export`` can rebuild a run's module from
its spec and load its checkpoint. Paths inside the folder are taken relative to where the folder
is now, not where it was written: a run folder can be moved or copied to another machine.

A run folder is untrusted input (report folders are downloaded and shared): every name or path
read from its files goes through :func:`plain_name` or :func:`inside_run_dir` before a file is
opened or written with it, so that ``../..`` or an absolute value cannot reach outside the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import UserError, first_line, os_error_line, unknown_name_error
from harness.spec import Result, RunSpec, matches_type, path_safe, read_results

PLAN = "plan.json"
RESULTS = "results.jsonl"
LOCK = ".harness.lock"  # held (flock) by the one `run` or `resume` writing the folder


def plain_name(value: object, what: str) -> str:
    """``value`` when it is a plain file name (no separator, not ``.``/``..``, not empty); else a UserError.

    Run ids, labels and the like become file and folder names under the run folder; one that holds a
    separator or is ``..`` would place them elsewhere (a crafted plan.json is enough).
    """
    if (
        not isinstance(value, str) or not value or value in (".", "..") or "/" in value or "\\" in value
        or any(ord(c) < 32 for c in value)
    ):
        raise UserError(f"{what} {value!r} is not a plain name (it would leave the run folder); refusing to use it")
    return value


def inside_run_dir(run_dir: str | Path, relative_path: object, what: str = "path") -> Path:
    """``run_dir / relative_path``, resolved, when it stays inside the run folder; else a UserError.

    For paths read from a run's files (checkpoint paths of a row, ``resume_from``): an absolute
    value or one climbing out with ``..`` (or through a symlink) would make the harness read or
    write outside the folder it was pointed at.
    """
    if not isinstance(relative_path, (str, Path)) or not str(relative_path) or "\0" in str(relative_path):
        raise UserError(f"{what} {relative_path!r} is not a path inside the run folder; refusing to use it")
    root = Path(run_dir).resolve()
    path = (root / relative_path).resolve()
    if Path(relative_path).is_absolute() or not path.is_relative_to(root):
        raise UserError(f"{what} {str(relative_path)!r} is outside the run folder {str(root)!r}; refusing to use it")
    return path


@contextlib.contextmanager
def writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's writer lock for the block, or refuse at once with a UserError.

    Two writers of one folder (two ``resume``s, or a ``resume`` while its ``run`` still runs) would
    both run the same missing run and append its row twice. ``flock`` on a file inside the folder is
    released by the kernel when the holder exits, however it ends, so a crash leaves no stale lock.
    The file is opened without following a symlink (a crafted folder could point it elsewhere) and
    is not inherited by the worker processes.
    """
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise UserError(f"cannot lock the run folder {str(run_dir)!r} ({path.name}): {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise UserError(
                f"another process{f' (pid {holder})' if holder.isdigit() else ''} holds the run folder {str(run_dir)!r} "
                "(a `run` or `resume` writing it); wait for it to end or stop it, then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def rows_kept_on_os_error(run_dir: Path) -> Iterator[None]:
    """A file-system error while a run folder is written (a full disk, a folder made read-only) is one
    line that also says the finished rows are safe: each row was flushed to results.jsonl as its run
    ended, and ``resume`` runs the rest and rebuilds the report once there is room."""
    try:
        yield
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        raise UserError(
            f"{os_error_line(error, run_dir)}; the rows finished so far are kept in {str(run_dir / RESULTS)!r} "
            f"(`python -m harness resume {run_dir}` runs the rest and writes the report)"
        ) from None


def write_plan(run_dir: Path, specs: list[RunSpec], command: str, extra: dict[str, Any] | None = None) -> None:
    """Record what this invocation will run, before it runs anything."""
    payload = {"command": command, **(extra or {}), "specs": [dataclasses.asdict(spec) for spec in specs]}
    (run_dir / PLAN).write_text(json.dumps(payload, indent=1) + "\n")


def check_run_dir(run_dir: Path) -> Path:
    """The folder, resolved; a UserError when it is not a run folder."""
    if not run_dir.is_dir():
        raise UserError(f"run folder {str(run_dir)!r} does not exist")
    if not (run_dir / PLAN).is_file() and not (run_dir / RESULTS).is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder: it has neither {PLAN} nor {RESULTS}")
    return run_dir.resolve()


def read_json(path: Path, what: str) -> Any:
    """The JSON in a run folder's file, or a UserError naming the file and why it cannot be read.

    A run folder may be truncated by a crash, written by another tool or crafted: its files are
    parsed here, once, so that no command meets a JSONDecodeError or a KeyError later.
    """
    try:
        return json.loads(path.read_text(errors="replace"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError, out-of-range numbers, deep nesting
        raise UserError(
            f"{str(path)!r} cannot be read: not JSON ({first_line(error)}); is the {what} truncated or from another tool?"
        ) from None
    except OSError as error:
        raise UserError(f"{str(path)!r} cannot be read: {error.strerror or error}") from None


def read_plan(run_dir: Path) -> dict[str, Any]:
    """plan.json as written (an object whose ``specs`` is a list), or a UserError saying what is wrong."""
    path = run_dir / PLAN
    if not path.is_file():
        raise UserError(
            f"{str(run_dir)!r} has no {PLAN} (it was written by an older harness or not by `run`): "
            "the runs it planned are unknown"
        )
    plan = read_json(path, "plan")
    if not isinstance(plan, dict):
        raise UserError(f"{str(path)!r} cannot be read: it holds a JSON {type(plan).__name__}, not the plan object `run` writes")
    if not isinstance(plan.get("specs"), list):
        problem = "has no 'specs'" if "specs" not in plan else f"has 'specs' as a {type(plan['specs']).__name__}, not a list"
        raise UserError(f"{str(path)!r} cannot be read: it {problem}")
    target = plan.get("target_val_loss")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise UserError(f"{str(path)!r} cannot be read: 'target_val_loss' is {json.dumps(target)[:60]}, not a number")
    return plan


def load_specs(run_dir: Path) -> list[RunSpec]:
    """The planned RunSpecs, their ``run_dir`` set to the folder where it is now.

    Falls back to ``specs/*.json`` (written as each run starts) for a folder without plan.json:
    enough to find the runs that started, not those that never did. A spec that is not an object,
    lacks a field or has one of the wrong type is a UserError naming the file and the spec.
    """
    run_dir = run_dir.resolve()
    if (run_dir / PLAN).is_file():
        raw = [(f"{str(run_dir / PLAN)!r} spec {index}", fields) for index, fields in enumerate(read_plan(run_dir)["specs"])]
    else:
        files = [p for p in sorted((run_dir / "specs").glob("*.json")) if not p.name.endswith(".result.json")]
        raw = [(repr(str(p)), read_json(p, "spec")) for p in files]
    specs = []
    for where, fields in raw:
        spec = spec_from_fields(fields, where)
        specs.append(check_spec_names(dataclasses.replace(spec, run_dir=str(run_dir))))
    return specs


_SPEC_TYPES: dict[str, Any] = typing.get_type_hints(RunSpec)
_SPEC_REQUIRED = [f.name for f in dataclasses.fields(RunSpec)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name != "run_dir"]


def spec_from_fields(fields: object, where: str) -> RunSpec:
    """A RunSpec from one planned spec's JSON, checked: an object with every required field, each of its type.

    Unknown keys are ignored (a newer harness may add fields); ``run_dir`` is set by the caller.
    """
    if not isinstance(fields, dict):
        raise UserError(f"{where} cannot be read: it is a JSON {type(fields).__name__}, not an object")
    missing = [name for name in _SPEC_REQUIRED if name not in fields]
    if missing:
        raise UserError(f"{where} cannot be read: it lacks {', '.join(map(repr, missing))}")
    for name, hint in _SPEC_TYPES.items():
        if name in fields and name != "run_dir" and not matches_type(fields[name], hint):
            expected = getattr(hint, "__name__", str(hint))
            raise UserError(f"{where} cannot be read: {name!r} is {json.dumps(fields[name])[:60]}, not a {expected}")
    return RunSpec(**{name: fields[name] for name in _SPEC_TYPES if name in fields and name != "run_dir"}, run_dir="")


def check_spec_names(spec: RunSpec) -> RunSpec:
    """The spec, once every value of it that becomes a file or folder name is a plain name.

    ``run_id`` names ``specs/``, ``logs/``, ``checkpoints/``, ``profiles/`` and ``artifacts/``
    entries; ``label``, ``accelerator`` and the workload name the TensorBoard folder; ``resume_from``
    is a path that fit reads. All come from plan.json, which a shared run folder may have crafted.
    """
    plain_name(spec.run_id, "run id")
    plain_name(spec.label, f"label of run {spec.run_id}")
    plain_name(spec.accelerator, f"accelerator of run {spec.run_id}")
    plain_name(path_safe(spec.workload) if isinstance(spec.workload, str) else spec.workload, f"workload of run {spec.run_id}")
    if spec.resume_from:
        inside_run_dir(spec.run_dir, spec.resume_from, f"resume_from of run {spec.run_id}")
    return spec


def load_results(run_dir: Path) -> list[Result]:
    path = run_dir / RESULTS
    return read_results(path) if path.is_file() else []


def find_run(
    run_dir: Path, trick: str, workload: str | None = None, accelerator: str | None = None, repeat: int = 0
) -> tuple[RunSpec, Result]:
    """The spec and the finished row of one run, named as the report names it.

    ``workload`` and ``accelerator`` may be left out when the folder holds only one of each; a
    name that matches nothing is a UserError listing what the folder holds.
    """
    run_dir = check_run_dir(run_dir)
    rows = [r for r in load_results(run_dir) if r.repeat == repeat]
    if not rows:
        raise UserError(f"{str(run_dir)!r} has no finished run with repeat {repeat}")
    for value, attribute in ((workload, "workload"), (accelerator, "accelerator")):
        choices = sorted({getattr(r, attribute) for r in rows})
        if value is None:
            if len(choices) > 1:
                raise UserError(f"the run folder holds several {attribute}s ({', '.join(choices)}): choose one with --{attribute}")
            value = choices[0]
        if value not in choices:
            raise unknown_name_error(attribute, value, choices, f"the {attribute}s in {run_dir.name}")
        rows = [r for r in rows if getattr(r, attribute) == value]
    by_trick = {r.trick: r for r in rows}
    if trick not in by_trick:
        raise unknown_name_error("trick", trick, sorted(by_trick), f"the runs in {run_dir.name}")
    result = by_trick[trick]
    specs = {spec.run_id: spec for spec in load_specs(run_dir)}
    if result.run_id not in specs:
        raise UserError(f"run {result.run_id!r} has a row in {RESULTS} but no spec in {PLAN} or specs/")
    return specs[result.run_id], result
