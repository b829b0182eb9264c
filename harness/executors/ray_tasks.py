"""``--executor ray``: every run is one Ray task that starts the usual worker in a fresh process.

Why Ray: it schedules one task per GPU (``num_gpus=1``) and sets ``CUDA_VISIBLE_DEVICES`` itself,
runs on VMs, Kubernetes and SLURM, and starts locally for tests, so a sweep that outgrows a machine
runs on an engine users already have. Isolation stays exactly as the local runner's: inside the task,
``runner.run_one`` spawns ``python -m harness.worker`` (a cold process per run), and the task itself
runs in a Ray worker that serves one task only (``max_calls=1``; Ray reuses CPU workers otherwise).

Files: each task returns its Result as JSON, so rows always come home, and the driver appends them to
results.jsonl as tasks finish, in any order. Logs, TensorBoard files, checkpoints and artefacts are
written by the task under the run folder's path *on the node that ran it*: on a cluster ``--out``
must be a path every node sees (a shared file system) for them to land in the run folder; this first
slice does not ship them back.

Every task first compares its node's harness, torch and Lightning versions with the driver's; a node
that differs refuses the run (a failed row naming both versions), since its numbers would not be
comparable.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import UserError, first_line
from harness.spec import Result, RunSpec

VERSIONED = ("lightning-trick-bench", "torch", "lightning")
ROOT = Path(__file__).resolve().parents[2]


def check_ray_available() -> None:
    """A one-line UserError when Ray is not installed (the ``ray`` extra is optional)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install -e '.[ray]' (valid executors: local, ray)") from None


def node_versions() -> dict[str, str]:
    """This process's harness, torch and Lightning versions, and the harness's git commit where it is a
    checkout (an editable install keeps one version number while its code changes). Read from package
    metadata, without importing torch."""
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "(not installed)"
    try:
        versions["harness commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def version_mismatch(driver: dict[str, str], node: dict[str, str]) -> str:
    """'' when a node may run the driver's runs, else one line naming each differing version.

    The commit is compared only when both sides are checkouts (an installed wheel has none)."""
    different = [
        f"{name} {node.get(name)} here, {driver[name]} on the driver"
        for name in driver
        if (name in node or name != "harness commit") and node.get(name) != driver[name]
    ]
    return "; ".join(different)


def refused(spec: RunSpec, reason: str) -> Result:
    return Result.for_spec(spec, "failed", reason=reason)


def run_task(spec_json: str, run_dir: str, timeout_s: float | None, driver_versions: dict[str, str], driver_cwd: str) -> str:
    """The body of one Ray task: check versions, run the spec in a fresh worker process, return its row.

    Runs in the Ray worker on some node. The driver's working directory is used when the node has it
    (an imported ``--workload pkg.mod:Class`` may be found through it, as in a local run).
    """
    from harness.runner import run_one  # the node's harness, imported here, not pickled from the driver
    from harness.scratch import sweep_stale_scratch

    spec = RunSpec.from_json(spec_json)
    mismatch = version_mismatch(driver_versions, node_versions())
    if mismatch:
        result = refused(spec, f"refused: this node's versions differ from the driver's: {mismatch}")
    else:
        if driver_cwd and os.path.isdir(driver_cwd):
            os.chdir(driver_cwd)
        # a task cancelled with force=True dies before run_one removes its run's scratch folder; the
        # next task on the node removes it (this node's temp dir: the driver's sweep cannot see it)
        sweep_stale_scratch()
        result = run_one(spec, Path(run_dir), timeout_s)
    result.host = socket.gethostname()
    result.details["executor"] = "ray"
    for variable in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):  # Ray sets both from the task's resources
        if variable in os.environ:
            result.details[variable.lower()] = os.environ[variable]
    return result.to_json()


def task_resources(spec: RunSpec, cpus_per_run: int) -> dict[str, Any]:
    """What one run asks Ray for: its CPUs, and one GPU per device of a GPU run (``--devices`` for DDP)."""
    gpus = spec.devices if spec.accelerator == "gpu" else 0
    return {"num_cpus": cpus_per_run, "num_gpus": gpus}


def connect(address: str | None) -> bool:
    """Join the Ray instance at ``address`` (``auto``, ``ray://host:10001``), or start a local one when
    None; True when this call started or joined it (and so should shut it down). A Ray already
    initialised in this process (a test's) is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    handler = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UserError(f"--ray-address {address or '(none: a local instance)'}: Ray could not start or connect: {first_line(error)}") from None
    _restore_sigterm_handler(handler)
    return True


def _restore_sigterm_handler(handler: Any) -> None:
    """Put back the SIGTERM handler that was there before ``ray.init``.

    ``ray.init`` installs its own SIGTERM handlers (a C-level crash handler that prints a stack, and a
    Python one that exits), which end the driver without the harness's "SIGTERM is Ctrl-C"
    (cli.sigterm_as_ctrl_c): no task cancelled, no "interrupted", no exit 130.
    """
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


class RayExecutor:
    """Submits each spec as one Ray task and yields Results as tasks finish (``ray.wait``).

    At most ``window`` tasks are outstanding (by default as many as the cluster can run at once), so
    the plan is still consumed lazily and Ctrl-C has little to cancel. On an interrupt, every
    outstanding task is cancelled (``ray.cancel(force=True)`` kills its Ray worker, and the run's
    process dies with it through harness.lifeline); rows already appended stay.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, cpus_per_run: int = 1, window: int | None = None,
        resources: Callable[[RunSpec], dict[str, Any]] | None = None,
    ) -> None:
        if cpus_per_run < 1:
            raise UserError(f"--ray-cpus-per-run must be >= 1, got {cpus_per_run}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.window = window
        self.resources = resources or (lambda spec: task_resources(spec, cpus_per_run))

    def results(self, specs: Iterable[RunSpec], run_dir: Path, timeout_s: float | None) -> Iterator[Result]:
        import ray

        started = connect(self.address)
        try:
            yield from self._results(ray, specs, run_dir, timeout_s)
        finally:
            if started:
                ray.shutdown()

    def _results(self, ray: Any, specs: Iterable[RunSpec], run_dir: Path, timeout_s: float | None) -> Iterator[Result]:
        remote = ray.remote(max_calls=1, max_retries=0)(run_task)
        versions, cwd = node_versions(), os.getcwd()
        window = self.window or self._capacity(ray)
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        pending: dict[Any, RunSpec] = {}
        upcoming = iter(specs)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    spec = next(upcoming, None)
                    if spec is None:
                        exhausted = True
                        break
                    resources = self.resources(spec)
                    if resources.get("num_gpus", 0) > cluster_gpus:  # it would wait for ever
                        raise UserError(
                            f"{spec.run_id} needs {resources['num_gpus']} GPU(s); the Ray cluster has {cluster_gpus} "
                            "(use --accelerator cpu, fewer --devices, or a cluster with GPUs)"
                        )
                    ref = remote.options(**resources).remote(
                        spec.to_json(), str(run_dir.resolve()), timeout_s, versions, cwd
                    )
                    pending[ref] = spec
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield self._collect(ray, ref, pending.pop(ref))
        finally:
            for ref in pending:  # an interrupt, or the consumer stopped: nothing is left running
                ray.cancel(ref, force=True)

    def _capacity(self, ray: Any) -> int:
        cluster = ray.cluster_resources()
        return max(1, int(cluster.get("CPU", 1) // self.cpus_per_run), int(cluster.get("GPU", 0)))

    def _collect(self, ray: Any, ref: Any, spec: RunSpec) -> Result:
        """The task's row; a task that died (its Ray worker killed, its node lost) is a failed row."""
        try:
            result = Result.from_dict(json.loads(ray.get(ref)))
        except ray.exceptions.RayError as error:
            result = refused(spec, f"ray task failed: {type(error).__name__}: {first_line(error)}"[:300])
            result.details["executor"] = "ray"
        if result.details.get("executor") == "ray" and result.reason.startswith("refused: this node"):
            print(f"harness: warning: {result.host or 'a node'}: {result.reason}", file=sys.stderr)
        return result
