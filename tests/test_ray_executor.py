"""``--executor ray`` on a real local Ray instance (no mocks of Ray): the same rows as the local executor,
a killed task as a failed row, GPU runs one per GPU with their own ``CUDA_VISIBLE_DEVICES``.

Ray starts once for the module (2-5 s on the shared 2-core machine; most of the module's minute or so
is the runs' cold worker processes), with 2 CPUs and 2 *fake* GPUs (Ray's
``num_gpus`` resource only: this machine has none). Skipped, with the reason, without Ray (the
``ray`` extra). The cheap checks of the same module need no Ray and live in test_executors.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from harness import cli  # noqa: E402
from harness.commands.resume_cmd import drop_rows  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.executors.ray_tasks import RayExecutor, task_resources  # noqa: E402
from harness.executors.runner import run_all  # noqa: E402
from harness.spec import Result, read_results  # noqa: E402

pytestmark = pytest.mark.ray

PROBES = Path(__file__).resolve().parent / "probes"  # probe_models.py: trains a linear map; kills its run or task, or sleeps


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance for the module: 2 CPUs, 2 fake GPUs, no dashboard. Its workers inherit this
    environment, so the probe module's folder goes on PYTHONPATH before Ray starts."""
    ray.shutdown()  # whatever an earlier module left (a test's own driver, a client mode): a no-op when nothing
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROBES), str(PROBES.parents[1]), before or "") if p)
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def sweep(out: Path, executor: str) -> list[Result]:
    """The seed autoencoder, 2 tricks x 2 repeats on CPU, a tiny budget, through the CLI; then, as if it had
    been interrupted, 2 of its rows dropped and finished by ``resume --executor local``, and 2 others by
    ``resume --executor ray``: a sweep of either executor is finished by either."""
    code = cli.main([
        "run", "--tricks", "grad-clipping,grad-accumulation", "--repeats", "2", "--accelerator", "cpu",
        "--dataset", "synthetic", "--synthetic-size", "256", "--max-epochs", "1", "--block-steps", "1",
        "--no-checkpoints", "--quiet", "--executor", executor, "--out", str(out),
    ])
    assert code == 0
    (run_dir,) = out.iterdir()
    for rows, finisher in (((0, 1), "local"), ((2, 3), "ray")):
        ids = [r.run_id for r in read_results(run_dir / "results.jsonl")]
        drop_rows(run_dir, {ids[i] for i in rows})
        assert cli.main(["resume", str(run_dir), "--quiet", "--executor", finisher]) == 0
    rows = read_results(run_dir / "results.jsonl")
    assert sum(r.details.get("executor") == "ray" for r in rows) == {"local": 2, "ray": 4}[executor]
    return rows


# what differs between any two processes or executors: timings, memory, contention, pids, where it ran
VARYING = ("_s", "per_s", "mem", "time", "contention", "cpu", "log", "warnings", "host", "isolation", "threads", "executor", "omp", "ray_", "shipped")


def same_row(row: Result) -> dict[str, Any]:
    keep = {k: v for k, v in dataclasses.asdict(row).items() if not any(word in k for word in VARYING)}
    keep["details"] = {k: v for k, v in row.details.items() if not any(word in k for word in VARYING)}
    keep.pop("noisy", None)
    keep["curve"] = [point["val_loss"] for point in row.curve]
    return keep


def test_a_ray_client_address_that_does_not_answer_is_a_user_error_and_leaves_ray_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``ray://`` address nobody serves is exit 2 naming the address and Ray's cause; and the failed
    attempt leaves no client mode behind (Ray's own leaves it on, and then the next ``ray.init()`` of a
    local instance in the process dies on an assertion inside Ray)."""
    from ray.util.client import worker as client_worker

    from harness.executors.ray_tasks import connect

    # Ray's client tries 3 times, waiting 5, 10 and 20 s for the channel; 1 s each is enough for a closed port
    monkeypatch.setattr(client_worker, "INITIAL_TIMEOUT_SEC", 1)
    monkeypatch.setattr(client_worker, "MAX_TIMEOUT_SEC", 1)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match=rf"--ray-address ray://127.0.0.1:{port}: Ray could not start or connect: ConnectionError: ray client connection timeout"):
        connect(f"ray://127.0.0.1:{port}")
    assert connect(None) is True  # a local instance starts, in the same process
    try:
        assert ray.cluster_resources()["CPU"] >= 1  # a local driver's call, not one sent to a dead client
    finally:
        ray.shutdown()


def test_a_ray_sweep_gives_the_local_sweeps_rows(local_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray sets OMP_NUM_THREADS from a task's declared CPUs (1 here); torch's CPU kernels sum in another
    # order on another thread count (train loss 0.34731144 on 2 threads, 0.34731143 on 1), so the local
    # runs get the same one thread: the executors are compared, not the thread counts.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local = {r.run_id: r for r in sweep(tmp_path / "local", "local")}
    on_ray = {r.run_id: r for r in sweep(tmp_path / "ray", "ray")}
    assert len(local) == 6 and set(on_ray) == set(local)
    for run_id, row in on_ray.items():
        assert row.status == "ok", row.reason
        assert set(dataclasses.asdict(row)) == set(dataclasses.asdict(local[run_id]))
        assert (row.train_loss, row.val_loss, row.test_loss) == (local[run_id].train_loss, local[run_id].val_loss, local[run_id].test_loss)
        assert same_row(row) == same_row(local[run_id])
    for row in [*on_ray.values(), *local.values()]:
        assert row.host
        if row.details.get("executor") == "ray":
            assert row.isolation == "spawn" and row.details["omp_num_threads"] == "1"  # Ray's, from the task's one CPU
            assert row.details["ray_files"] == "shared" and row.details["ray_node"]  # --ray-files auto, on one machine
        else:
            assert row.isolation == "fork" and "omp_num_threads" not in row.details


def test_shipped_files_arrive_in_the_run_folder_and_a_resume_ships_its_checkpoint_out(local_ray: Any, tmp_path: Path) -> None:
    """``--ray-files ship``, as on a node that does not see the run folder: each run trains in a folder of its
    own on its node, and its log, TensorBoard events and checkpoints come back with its row. A resume then
    sends the interrupted run's last.ckpt to the node that continues it."""
    out = tmp_path / "out"
    common = ["--quiet", "--executor", "ray", "--ray-files", "ship"]
    assert cli.main([
        "run", "--tricks", "grad-clipping", "--repeats", "1", "--accelerator", "cpu", "--dataset", "synthetic", "--synthetic-size", "256",
        "--max-epochs", "1", "--block-steps", "1", "--out", str(out), *common,
    ]) == 0
    (run_dir,) = out.iterdir()
    rows = read_results(run_dir / "results.jsonl")
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    for row in rows:
        assert row.details["ray_files"] == "shipped" and row.details["shipped_bytes"] > 0
        assert set(row.checkpoints) == {"best", "last"} and all((run_dir / path).is_file() for path in row.checkpoints.values())
        assert (run_dir / row.details.get("log", f"logs/{row.run_id}.log")).is_file()
        assert json.loads((run_dir / "specs" / f"{row.run_id}.json").read_text())["run_dir"] == str(run_dir.resolve())
    assert len(list((run_dir / "tb").rglob("events.out.tfevents.*"))) >= 2
    assert not (run_dir / ".harness-ray-token").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"harness-scratch-*-{rows[0].run_id}-ray-*")), "a task left its own run folder behind"

    baseline = next(r for r in rows if r.trick == "baseline")
    drop_rows(run_dir, {baseline.run_id})  # as if the sweep had been stopped during the baseline
    assert cli.main(["resume", str(run_dir), *common]) == 0
    resumed = next(r for r in read_results(run_dir / "results.jsonl") if r.run_id == baseline.run_id)
    # the node read the shipped last.ckpt: it saw that the run had spent its budget, and trained afresh
    assert resumed.status == "ok" and "at the end of the budget" in resumed.details["resume_ignored"], resumed.details


def test_a_task_killed_mid_run_is_a_failed_row_and_the_sweep_goes_on(local_ray: Any, probe_spec, tmp_path: Path) -> None:
    specs = [probe_spec("run-killed", kill="run"), probe_spec("task-killed", kill="task"), probe_spec("next")]
    results = {r.run_id: r for r in run_all(specs, tmp_path, show_progress=False, executor=RayExecutor(window=2))}
    assert results["run-killed"].status == "failed" and results["run-killed"].reason.startswith("killed by SIGKILL")
    assert results["task-killed"].status == "failed" and results["task-killed"].reason.startswith("ray task failed:"), results["task-killed"].reason
    assert results["next"].status == "ok", results["next"].reason
    assert {r.run_id for r in read_results(tmp_path / "results.jsonl")} == {"run-killed", "task-killed", "next"}


def test_gpu_runs_get_one_gpu_each_with_distinct_cuda_visible_devices(local_ray: Any, probe_spec, tmp_path: Path) -> None:
    # CPU runs declared to Ray as GPU runs (task_resources of the same spec on --accelerator gpu): Ray's 2
    # GPUs here are fake, so the runs train on the CPU while Ray assigns each its own GPU.
    declared_as_gpu = lambda spec: task_resources(dataclasses.replace(spec, accelerator="gpu"), 1)  # noqa: E731
    specs = [probe_spec(f"gpu-{i}") for i in range(2)]
    results = run_all(specs, tmp_path, show_progress=False, executor=RayExecutor(resources=declared_as_gpu))
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    assert sorted(r.details["cuda_visible_devices"] for r in results) == ["0", "1"]
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])["details"]["cuda_visible_devices"] in ("0", "1")
    # a DDP run of 3 GPUs on a cluster of 2 would wait for ever: refused before any task is submitted
    three = lambda spec: task_resources(dataclasses.replace(spec, accelerator="gpu", devices=3), 1)  # noqa: E731
    with pytest.raises(UserError, match=r"^too-big needs 3 GPU\(s\); the Ray cluster has 2 \(use --accelerator cpu"):
        run_all([probe_spec("too-big")], tmp_path / "big", show_progress=False, executor=RayExecutor(resources=three))
    assert not (tmp_path / "big" / "results.jsonl").exists()


def test_ctrl_c_cancels_the_outstanding_tasks_and_keeps_the_finished_rows(local_ray: Any, probe_spec, tmp_path: Path) -> None:
    spec_path = str(tmp_path / "specs" / "slow.json")
    running = []

    def interrupt(result: Result) -> None:  # Ctrl-C as the first row comes in, once the slow run is running
        deadline = time.monotonic() + 30
        while not worker_of(spec_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        running.extend(worker_of(spec_path))
        raise KeyboardInterrupt

    specs = [probe_spec("quick"), probe_spec("slow", sleep=600)]
    with pytest.raises(KeyboardInterrupt):
        run_all(specs, tmp_path, show_progress=False, on_result=interrupt, executor=RayExecutor(window=2))
    assert running, "the slow run never started"
    assert [r.run_id for r in read_results(tmp_path / "results.jsonl")] == ["quick"]
    deadline = time.monotonic() + 30
    while worker_of(spec_path) and time.monotonic() < deadline:  # ray.cancel(force=True) kills its Ray worker
        time.sleep(0.5)
    assert not worker_of(spec_path), "the cancelled run's worker process is still running"


def worker_of(spec_path: str) -> list[int]:
    """The pids of live processes whose command line names ``spec_path`` (the run's worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and spec_path in (entry / "cmdline").read_bytes().decode(errors="replace"):
                state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
                if "Z" not in state:  # a zombie has finished
                    pids.append(int(entry.name))
        except (OSError, StopIteration):
            continue
    return pids
