"""``--executor ray --ray-address auto`` joining a running Ray cluster of two nodes, as on a real cluster.

The cluster is Ray's own multi-node test cluster (``ray.cluster_utils.Cluster``): a head and a second
node, each a real raylet with 1 CPU, started as separate processes on this machine and joined by address,
no mocks. Both nodes see this machine's disk, so ``--ray-files ship`` is asked for explicitly: the files
take the path they take on nodes without a shared ``--out``. What no test here can show: nodes on other
machines (network, other file systems, other GPU models); the README says what was and was not run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from harness import cli  # noqa: E402
from harness.spec import read_results  # noqa: E402

pytestmark = pytest.mark.ray


def test_a_sweep_joins_a_two_node_cluster_by_address_and_uses_both_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if ray.is_initialized():  # another module's instance; this test is the driver of its own cluster
        ray.shutdown()
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # what `--ray-address auto` finds, as after `ray start`
        out = tmp_path / "out"
        code = cli.main([
            "run", "--tricks", "grad-clipping,grad-accumulation", "--repeats", "1", "--accelerator", "cpu",
            "--dataset", "synthetic", "--synthetic-size", "256", "--max-epochs", "1", "--block-steps", "1",
            "--quiet", "--executor", "ray", "--ray-address", "auto", "--ray-files", "ship", "--out", str(out),
        ])
        assert code == 0
        assert not ray.is_initialized()  # the driver left the cluster when its sweep ended
        assert len(ray_nodes(cluster)) == 2  # and left it running: it joined, it did not start it
    finally:
        cluster.shutdown()
    (run_dir,) = out.iterdir()
    rows = read_results(run_dir / "results.jsonl")
    assert [r.status for r in rows] == ["ok"] * 3, [r.reason for r in rows]
    # two runs at once, one per node's CPU: the first two were placed on different nodes
    assert len({r.details["ray_node"] for r in rows}) == 2
    assert all(r.details["ray_files"] == "shipped" and (run_dir / r.checkpoints["last"]).is_file() for r in rows)
    assert (run_dir / "report.md").is_file()


def ray_nodes(cluster: object) -> list[dict]:
    """The live nodes of ``cluster``, seen by a fresh driver that joins it and leaves."""
    ray.init(address=cluster.address, log_to_driver=False)  # type: ignore[attr-defined]
    try:
        return [node for node in ray.nodes() if node["Alive"]]
    finally:
        ray.shutdown()
