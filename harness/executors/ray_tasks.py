"""``--executor ray``: every run is one Ray task that starts the usual worker in a fresh process.

Why Ray: it schedules one task per GPU (``num_gpus=1``) and sets ``CUDA_VISIBLE_DEVICES`` itself,
runs on VMs, Kubernetes and SLURM, and starts locally for tests, so a sweep that outgrows a machine
runs on an engine users already have. Isolation stays exactly as the local runner's: inside the task,
``runner.run_one`` spawns ``python -m harness.worker`` (a cold process per run), and the task itself
runs in a Ray worker that serves one task only (``max_calls=1``; Ray reuses CPU workers otherwise).

Files: each task returns its Result as JSON, so rows always come home, and the driver appends them to
results.jsonl as tasks finish, in any order. A run's other files (log, TensorBoard events, checkpoints,
profiles, artefacts) reach the run folder one of two ways (``--ray-files``):

- ``shared``: the node sees the driver's run folder at the same path (one machine, or a shared
  ``--out`` on NFS or a mounted bucket), and the run writes there directly;
- ``ship``: the run writes into a folder of its own on its node, and the task returns those files
  as a tar archive with the row; the driver unpacks it into the run folder (harness.executors.shipping,
  which refuses any path that would leave it).

``auto`` (the default) decides per task: the driver leaves a random token in the run folder, and a
node that reads the same token there shares the folder; any other node ships. Each row says which
(``details.ray_files``).

Every task first compares its node's harness, torch and Lightning versions with the driver's; a node
that differs refuses the run (a failed row naming both versions), since its numbers would not be
comparable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import UserError, first_line
from harness.executors import RAY_FILES
from harness.executors.scratch import scratch_prefix, sweep_stale_scratch
from harness.executors.shipping import ShippedFilesRefused, pack_run_files, unpack_run_files
from harness.spec import Result, RunSpec, add_warning

VERSIONED = ("lightning-trick-bench", "torch", "lightning")
DEFAULT_GPU_WAIT_S = 600.0  # --ray-gpu-wait on a cluster joined by --ray-address: an autoscaler's GPU node start
CLIENT_CONNECT_TRIES = 3  # a ray:// head whose Ray Client server failed to start one for this driver: tries in all
TOKEN_FILE = ".harness-ray-token"  # in the run folder while a ray sweep runs: a node that reads it shares the folder
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


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What every task of one sweep gets from the driver, besides its own spec."""

    run_dir: str  # the driver's run folder, absolute
    timeout_s: float | None
    versions: dict[str, str]  # the driver's (node_versions)
    cwd: str  # the driver's working directory
    files: str = "auto"  # --ray-files
    token: str = ""  # the content of TOKEN_FILE in the driver's run folder


def sees_run_dir(sweep: Sweep) -> bool:
    """Whether this node sees the driver's run folder: it reads the driver's token there."""
    try:
        return bool(sweep.token) and (Path(sweep.run_dir) / TOKEN_FILE).read_text() == sweep.token
    except (OSError, UnicodeDecodeError):
        return False


def run_task(spec_json: str, sweep_fields: dict[str, Any], resume_checkpoint: bytes = b"") -> tuple[str, bytes]:
    """The body of one Ray task: check versions, run the spec in a fresh worker process, return its row
    as JSON and, when its files are shipped, their tar archive (else b"").

    Runs in the Ray worker on some node. The driver's working directory is used when the node has it
    (an imported ``--workload pkg.mod:Class`` may be found through it, as in a local run).
    ``resume_checkpoint``: the bytes of ``spec.resume_from`` for a node that does not share the run folder.
    Its arguments are plain data (no class of the driver's harness), so that a node of another version
    gets as far as the version check and refuses with its one line.
    """
    spec = RunSpec.from_json(spec_json)
    known = {field.name for field in dataclasses.fields(Sweep)}
    sweep = Sweep(**{key: value for key, value in sweep_fields.items() if key in known})
    files, how = b"", "shared"
    mismatch = version_mismatch(sweep.versions, node_versions())
    shared = sees_run_dir(sweep)
    if mismatch:
        result = refused(spec, f"refused: this node's versions differ from the driver's: {mismatch}")
    elif sweep.files == "shared" and not shared:
        result = refused(
            spec, f"refused: this node does not see the run folder {sweep.run_dir!r} (--ray-files shared); "
            "use a path every node sees for --out, or --ray-files auto or ship"
        )
    else:
        if sweep.cwd and os.path.isdir(sweep.cwd):
            os.chdir(sweep.cwd)
        # a task cancelled with force=True dies before its run's scratch folder (or its own run folder,
        # when shipping) is removed; the next task on the node removes it (the driver cannot see this disk)
        sweep_stale_scratch()
        if shared and sweep.files != "ship":
            result = _run(spec, Path(sweep.run_dir), sweep.timeout_s)
        else:
            result, files = _run_and_pack(spec, sweep, resume_checkpoint)
            how = "shipped"
    result.host = socket.gethostname()
    result.details["executor"] = "ray"
    result.details["ray_node"] = _node_id()  # hosts may share a name (containers, one machine's raylets)
    if not mismatch:
        result.details["ray_files"] = how
    for variable in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):  # Ray sets both from the task's resources
        if variable in os.environ:
            result.details[variable.lower()] = os.environ[variable]
    return result.to_json(), files


def _node_id() -> str:
    """The Ray node this task runs on ('' outside a task)."""
    try:
        import ray

        if not ray.is_initialized():  # get_runtime_context() would start a Ray instance
            return ""
        return str(ray.get_runtime_context().get_node_id() or "")
    except Exception:  # noqa: BLE001 - a label for the row, never a reason to lose it
        return ""


def _run(spec: RunSpec, run_dir: Path, timeout_s: float | None) -> Result:
    from harness.executors.runner import run_one  # the node's harness, imported here, not pickled from the driver

    return run_one(spec, run_dir, timeout_s)


def _run_and_pack(spec: RunSpec, sweep: Sweep, resume_checkpoint: bytes) -> tuple[Result, bytes]:
    """Run ``spec`` in a run folder of this node's own, and pack what it wrote; the folder is removed after.

    The row's paths are relative to the run folder, so they hold in the driver's; a reason that names
    the node's folder is rewritten to name the driver's.
    """
    from harness.runfolder.rundir import inside_run_dir

    # named as a scratch folder of this Ray worker: if the task is cancelled, a later task's sweep removes it
    with tempfile.TemporaryDirectory(prefix=scratch_prefix(f"{spec.run_id}-ray")) as local:
        if spec.resume_from and resume_checkpoint:
            path = inside_run_dir(local, spec.resume_from, f"resume_from of run {spec.run_id}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(resume_checkpoint)
        result = _run(dataclasses.replace(spec, run_dir=local), Path(local), sweep.timeout_s)
        result.reason = result.reason.replace(local, sweep.run_dir)
        files = pack_run_files(Path(local))
    result.details["shipped_bytes"] = len(files)
    return result, files


def task_resources(spec: RunSpec, cpus_per_run: int) -> dict[str, Any]:
    """What one run asks Ray for: its CPUs, and one GPU per device of a GPU run (``--devices`` for DDP)."""
    gpus = spec.devices if spec.accelerator == "gpu" else 0
    return {"num_cpus": cpus_per_run, "num_gpus": gpus}


def connect(address: str | None) -> bool:
    """Join the Ray instance at ``address`` (``auto``, ``ray://host:10001``), or start a local one when
    None; True when this call started or joined it (and so should shut it down). A Ray already
    initialised in this process (a test's) is used as it is.

    A ``ray://`` head that fails to start its per-driver Ray Client server is asked again, up to
    CLIENT_CONNECT_TRIES times in all, each retry said on stderr: that server's process can die at its start
    (a crash inside Ray, see the README), and a second ask usually gets one. Any other failure is exit 2 at once.
    """
    import ray

    if ray.is_initialized():
        return False
    handler = signal.getsignal(signal.SIGTERM)
    for attempt in range(1, CLIENT_CONNECT_TRIES + 1):
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
            break
        except Exception as error:  # ConnectionError, RuntimeError, ValueError, Ray's AuthenticationError, grpc's errors
            _leave_after_failed_init(ray)
            where = f"--ray-address {address or '(none: a local instance)'}"
            server_crashed = client_server_failed_to_start(address, error)
            if server_crashed and attempt < CLIENT_CONNECT_TRIES:
                print(f"harness: warning: {where}: {ray_cause(error)}; asking again (try {attempt + 1} of {CLIENT_CONNECT_TRIES})", file=sys.stderr)
                continue
            hint = f" ({CLIENT_SERVER_HINT})" if server_crashed else ""
            raise UserError(f"{where}: Ray could not start or connect: {ray_cause(error)}{hint}") from None
    _restore_sigterm_handler(handler)
    return True


CLIENT_SERVER_HINT = (
    "an empty ray_client_server_<port>.err in the head's session logs means that server crashed at its start; "
    "a head started with GRPC_ENABLE_FORK_SUPPORT=0 in its environment avoided that crash here, see the README"
)


# how Ray 2.60's client reports that the head's proxy lost the server process it starts for a driver: the
# process gone before the proxy looked ("Starting Ray client server failed"), a zombie as it looked (psutil's
# error inside start_specific_server), or gone before it answered ("Proxy failed to Connect to backend")
CLIENT_SERVER_START_FAILURES = ("Starting Ray client server failed", "in start_specific_server", "Proxy failed to Connect to backend")


def client_server_failed_to_start(address: str | None, error: BaseException) -> bool:
    """Whether ``ray.init(ray://...)`` failed because the head's Ray Client proxy could not start, or
    lost, the server process it runs for each driver (CLIENT_SERVER_START_FAILURES)."""
    return bool(address and address.startswith("ray://")) and isinstance(error, ConnectionError) and any(
        failure in str(error) for failure in CLIENT_SERVER_START_FAILURES
    )


def ray_cause(error: BaseException) -> str:
    """An exception of Ray's in one line: its type, its first line and, where the message carries a
    traceback (Ray Client's "Initialization failure from server:"), that traceback's last line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    cause = f"{type(error).__name__}: {first_line(error)}"
    if len(lines) > 1 and lines[-1] != lines[0]:
        cause += f" ... {lines[-1]}"
    return cause


def _leave_after_failed_init(ray: Any) -> None:
    """Undo what a failed ``ray.init`` left in this process.

    A ``ray://`` address that does not answer leaves Ray's client mode switched on: every later Ray call
    in the process goes to a client that is not connected, and a later ``ray.init()`` of a local instance
    fails on an assertion inside Ray. ``ray.shutdown()`` switches it off (and ends anything half started).
    """
    try:
        ray.shutdown()
    except Exception as error:  # noqa: BLE001 - the init's own error is the one to report
        print(f"harness: warning: ray.shutdown() after the failed ray.init also failed: {first_line(error)}", file=sys.stderr)


def _request_resources(ray: Any, bundles: list[dict[str, float]]) -> None:
    """Ask the cluster's autoscaler for ``bundles`` (``[]`` withdraws the request); a cluster without
    one ignores it."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


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

    At most ``window`` tasks are outstanding (by default as many as the cluster can run at once,
    looked up again as each task finishes, so nodes that join later get work), so the plan is still
    consumed lazily and Ctrl-C has little to cancel. On an interrupt, every outstanding task is
    cancelled (``ray.cancel(force=True)`` kills its Ray worker, and the run's process dies with it
    through harness.executors.lifeline); rows already appended stay.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, cpus_per_run: int = 1, window: int | None = None,
        resources: Callable[[RunSpec], dict[str, Any]] | None = None, files: str = "auto", gpu_wait_s: float | None = None,
    ) -> None:
        if cpus_per_run < 1:
            raise UserError(f"--ray-cpus-per-run must be >= 1, got {cpus_per_run}")
        if files not in RAY_FILES:
            raise UserError(f"--ray-files must be one of {', '.join(RAY_FILES)}, got {files!r}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.window = window
        self.files = files
        # how long a run needing more GPUs than the cluster shows waits for an autoscaler: none for a local
        # instance (nothing will join it), DEFAULT_GPU_WAIT_S on a cluster joined by address
        self.gpu_wait_s = gpu_wait_s if gpu_wait_s is not None else (DEFAULT_GPU_WAIT_S if address else 0.0)
        self.resources = resources or (lambda spec: task_resources(spec, cpus_per_run))

    def results(self, specs: Iterable[RunSpec], run_dir: Path, timeout_s: float | None) -> Iterator[Result]:
        import ray

        started = connect(self.address)
        token = secrets.token_hex(16)
        token_path = run_dir / TOKEN_FILE
        token_path.write_text(token)
        sweep = Sweep(str(run_dir.resolve()), timeout_s, node_versions(), os.getcwd(), self.files, token)
        try:
            yield from self._results(ray, specs, run_dir, sweep)
        finally:
            token_path.unlink(missing_ok=True)
            if started:
                ray.shutdown()

    def _results(self, ray: Any, specs: Iterable[RunSpec], run_dir: Path, sweep: Sweep) -> Iterator[Result]:
        remote = ray.remote(max_calls=1, max_retries=0)(run_task)
        fields = dataclasses.asdict(sweep)
        pending: dict[Any, RunSpec] = {}
        upcoming = iter(specs)
        exhausted = requested = False
        try:
            while True:
                cluster = ray.cluster_resources()  # again each time: nodes join and leave
                window = self.window or self._capacity(cluster)
                while not exhausted and len(pending) < window:
                    spec = next(upcoming, None)
                    if spec is None:
                        exhausted = True
                        break
                    resources = self.resources(spec)
                    if resources.get("num_gpus", 0) > int(cluster.get("GPU", 0)):  # it would wait for ever
                        cluster = self._wait_for_gpus(ray, spec, resources["num_gpus"], int(cluster.get("GPU", 0)))
                        requested = True
                    ref = remote.options(**resources).remote(spec.to_json(), fields, self._resume_checkpoint(spec, run_dir))
                    pending[ref] = spec
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield self._collect(ray, ref, pending.pop(ref), run_dir)
        finally:
            for ref in pending:  # an interrupt, or the consumer stopped: nothing is left running
                ray.cancel(ref, force=True)
            if requested:  # the autoscaler may scale the GPU nodes down again
                _request_resources(ray, [])

    def _wait_for_gpus(self, ray: Any, spec: RunSpec, gpus: int, have: int) -> dict[str, float]:
        """The cluster's resources once it shows ``gpus`` GPUs (it has ``have``), within ``gpu_wait_s``; else a UserError.

        A run needing more GPUs than the cluster has would wait for ever in Ray's queue. An autoscaling
        cluster (KubeRay, a cluster launcher's) often keeps no GPU node up while idle: it is asked for
        the GPUs (``ray.autoscaler.sdk.request_resources``) and given ``gpu_wait_s`` to start them.
        """
        refusal = (
            f"{spec.run_id} needs {gpus} GPU(s); the Ray cluster has {have} (use --accelerator cpu, fewer --devices, "
            "or a cluster with GPUs"
        )
        if self.gpu_wait_s <= 0:
            raise UserError(refusal + "; --ray-gpu-wait gives an autoscaling cluster time to start GPU nodes)")
        print(
            f"harness: {spec.run_id} needs {gpus} GPU(s), the Ray cluster has {have}: asked its autoscaler for them, "
            f"waiting up to {self.gpu_wait_s:g} s (--ray-gpu-wait; Ctrl-C stops)", file=sys.stderr,
        )
        _request_resources(ray, [{"GPU": gpus}])
        deadline = time.monotonic() + self.gpu_wait_s
        while True:
            cluster = ray.cluster_resources()
            if int(cluster.get("GPU", 0)) >= gpus:
                return cluster
            if time.monotonic() >= deadline:
                raise UserError(refusal + f"; none came within --ray-gpu-wait {self.gpu_wait_s:g} s)")
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def _capacity(self, cluster: dict[str, float]) -> int:
        return max(1, int(cluster.get("CPU", 1) // self.cpus_per_run), int(cluster.get("GPU", 0)))

    def _resume_checkpoint(self, spec: RunSpec, run_dir: Path) -> bytes:
        """The checkpoint a resumed run continues from, for a node that does not share the run folder
        (b"" when its files are shared, or it starts afresh)."""
        if not spec.resume_from or self.files == "shared":
            return b""
        from harness.runfolder.rundir import inside_run_dir

        return inside_run_dir(run_dir, spec.resume_from, f"resume_from of run {spec.run_id}").read_bytes()

    def _collect(self, ray: Any, ref: Any, spec: RunSpec, run_dir: Path) -> Result:
        """The task's row, with its shipped files unpacked; a task that died (its Ray worker killed, its
        node lost) is a failed row."""
        try:
            row, files = ray.get(ref)
            result = Result.from_dict(json.loads(row))
        except ray.exceptions.RayError as error:
            result = refused(spec, f"ray task failed: {type(error).__name__}: {first_line(error)}"[:300])
            result.details["executor"] = "ray"
            return result
        if files:
            self._unpack(result, files, spec, run_dir)
        if result.reason.startswith("refused: this node"):
            print(f"harness: warning: {result.host or 'a node'}: {result.reason}", file=sys.stderr)
        return result

    @staticmethod
    def _unpack(result: Result, files: bytes, spec: RunSpec, run_dir: Path) -> None:
        """Unpack a row's shipped files into the run folder; refused files leave the row without the
        paths that would point at them, and a warning on the row and on stderr."""
        try:
            unpack_run_files(files, run_dir)
        except ShippedFilesRefused as error:
            message = f"{spec.run_id}: the files shipped from {result.host or 'its node'} were not unpacked: {error}"
            print(f"harness: warning: {message}", file=sys.stderr)
            add_warning(result.details, message)
            result.checkpoints = {}
            return
        specs = run_dir / "specs"
        specs.mkdir(exist_ok=True)
        (specs / f"{spec.run_id}.json").write_text(spec.to_json())  # the driver's paths, not the node's
