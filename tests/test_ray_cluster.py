"""``--executor ray`` joining a running Ray cluster, as on a real one: by ``--ray-address auto``, through
the Ray Client (``ray://``), and waiting for an autoscaler's GPU node.

The cluster is Ray's own multi-node test cluster (``ray.cluster_utils.Cluster``): a head and a second node,
each a real raylet with 1 CPU, started as separate processes on this machine and joined by address, no
mocks; the head serves the Ray Client on a free port. Both nodes see this machine's disk, so ``--ray-files
ship`` is asked for where the files' way home is tested. The GPU node added mid-test declares Ray's ``GPU``
resource only (this machine has none): its run trains on the CPU. What no test here can show: nodes on other
machines (network, other file systems, other GPU models); the README says what was and was not run.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from harness import cli  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.executors.ray_tasks import RayExecutor, task_resources  # noqa: E402
from harness.executors.runner import run_all  # noqa: E402
from harness.spec import read_results  # noqa: E402

pytestmark = pytest.mark.ray

SWEEP = [
    "run", "--repeats", "1", "--accelerator", "cpu", "--dataset", "synthetic", "--synthetic-size", "256",
    "--max-epochs", "1", "--block-steps", "1", "--quiet", "--executor", "ray",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head (1 CPU, serving the Ray Client) and a second node (1 CPU), for the module.

    Its processes start with GRPC_ENABLE_FORK_SUPPORT=0, as the README advises for a head that serves the
    Ray Client: without it the head's Ray Client proxy lost the server process it forks for a driver to a
    SIGSEGV at its start on 10 of 56 fresh clusters here (Ray 2.60, grpcio 1.85; 0 of 35 with it), and a
    CI run failed on it. The driver's retry for that crash is tested in test_executors.py.
    """
    ray.shutdown()  # another module's instance, or a client mode it left: these tests are drivers that join a cluster
    fork_support = os.environ.get("GRPC_ENABLE_FORK_SUPPORT")
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"  # read by each Ray process this module starts, not by this one
    try:
        port = free_port()
        started = cluster_utils.Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "ray_client_server_port": port}
        )
        started.client_address = f"ray://127.0.0.1:{port}"
        try:
            started.add_node(num_cpus=1)
            started.wait_for_nodes()
            yield started
        finally:
            ray.shutdown()
            started.shutdown()
    finally:
        if fork_support is None:
            os.environ.pop("GRPC_ENABLE_FORK_SUPPORT", None)
        else:
            os.environ["GRPC_ENABLE_FORK_SUPPORT"] = fork_support


def test_a_sweep_joins_a_two_node_cluster_by_address_and_uses_both_nodes(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # what `--ray-address auto` finds, as after `ray start`
    out = tmp_path / "out"
    code = cli.main([*SWEEP, "--tricks", "grad-clipping,grad-accumulation", "--ray-address", "auto", "--ray-files", "ship", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    assert not ray.is_initialized()  # the driver left the cluster when its sweep ended
    assert len(live_nodes(cluster.address)) == 2  # and left it running: it joined, it did not start it
    (run_dir,) = out.iterdir()
    rows = read_results(run_dir / "results.jsonl")
    assert [r.status for r in rows] == ["ok"] * 3, [r.reason for r in rows]
    # two runs at once, one per node's CPU: the first two were placed on different nodes
    assert len({r.details["ray_node"] for r in rows}) == 2
    assert all(r.details["ray_files"] == "shipped" and (run_dir / r.checkpoints["last"]).is_file() for r in rows)
    assert (run_dir / "report.md").is_file()


def test_a_sweep_through_the_ray_client(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--ray-address ray://HOST:PORT``: the driver is a Ray Client of the head; rows, files and the report
    as with any other address (the nodes see this run folder: ``auto`` finds it shared)."""
    out = tmp_path / "out"
    code = cli.main([*SWEEP, "--tricks", "grad-clipping", "--ray-address", cluster.client_address, "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    (run_dir,) = out.iterdir()
    rows = read_results(run_dir / "results.jsonl")
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    assert all(r.details["executor"] == "ray" and r.details["ray_files"] == "shared" for r in rows)
    assert all((run_dir / path).is_file() for r in rows for path in r.checkpoints.values())


def test_a_gpu_run_waits_for_a_gpu_node_to_join_and_gives_up_after_ray_gpu_wait(
    cluster: Any, make_spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cluster shows no GPU, as an autoscaling one whose GPU nodes are scaled to zero: the sweep asks
    for one and waits; a node with a GPU joins 3 s later and gets the run. A run needing 2 GPUs, which
    never come, stops the sweep after --ray-gpu-wait with exit-2 wording."""
    as_gpu = lambda spec: task_resources(dataclasses.replace(spec, accelerator="gpu"), 1)  # noqa: E731
    executor = RayExecutor(address=cluster.address, resources=as_gpu, gpu_wait_s=60)
    rows: list[Any] = []
    errors: list[BaseException] = []

    def run_sweep() -> None:
        try:
            rows.extend(run_all([make_spec(max_epochs=1, checkpoints=False)], tmp_path / "one", show_progress=False, executor=executor))
        except BaseException as error:  # noqa: BLE001 - shown by the assertion below, not lost in the thread
            errors.append(error)

    # the sweep waits in a thread of its own; the node joins from this one (Ray starts nodes from the main thread)
    sweep = threading.Thread(target=run_sweep)
    sweep.start()
    time.sleep(3.0)
    assert sweep.is_alive(), errors  # still waiting for a GPU
    cluster.add_node(num_cpus=1, num_gpus=1)
    sweep.join(timeout=120)
    assert not errors, errors
    (row,) = rows
    assert "needs 1 GPU(s), the Ray cluster has 0: asked its autoscaler for them, waiting up to 60 s" in capsys.readouterr().err
    assert row.status == "ok", row.reason
    assert row.details["cuda_visible_devices"] == "0"

    two = lambda spec: task_resources(dataclasses.replace(spec, accelerator="gpu", devices=2), 1)  # noqa: E731
    executor = RayExecutor(address=cluster.address, resources=two, gpu_wait_s=1)
    with pytest.raises(UserError, match=r"needs 2 GPU\(s\); the Ray cluster has 1 .*none came within --ray-gpu-wait 1 s"):
        run_all([make_spec(max_epochs=1)], tmp_path / "two", show_progress=False, executor=executor)
    assert not (tmp_path / "two" / "results.jsonl").exists()


def live_nodes(address: str) -> list[dict]:
    """The live nodes of the cluster at ``address``, seen by a fresh driver that joins it and leaves."""
    ray.init(address=address, log_to_driver=False)
    try:
        return [node for node in ray.nodes() if node["Alive"]]
    finally:
        ray.shutdown()
