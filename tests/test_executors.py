"""The executor seam without starting Ray: choices and their errors, what a run asks Ray for, the
version check that refuses a node, and the local executor's rows (with the host they ran on)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from harness import cli
from harness.errors import UserError
from harness.executors import make_executor
from harness.executors.local import LocalExecutor
from harness.executors.ray_tasks import (
    CLIENT_CONNECT_TRIES, TOKEN_FILE, check_ray_available, connect, node_versions, run_task, task_resources, version_mismatch,
)
from harness.spec import Result


def test_the_local_executor_is_the_default_and_a_bad_choice_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(make_executor("local", "spawn"), LocalExecutor)
    with pytest.raises(UserError, match=r"--executor must be one of local, ray, got 'dask'"):
        make_executor("dask")
    with pytest.raises(UserError, match="--ray-address 'auto' needs --executor ray"):
        make_executor("local", ray_address="auto")
    assert cli.main(["run", "--executor", "local", "--ray-address", "auto", "--tricks", "none"]) == 2
    assert "needs --executor ray" in capsys.readouterr().err
    assert cli.main(["run", "--ray-files", "ship", "--tricks", "none"]) == 2  # --executor local is the default
    assert "--ray-files 'ship' needs --executor ray (got --executor local)" in capsys.readouterr().err


def test_without_ray_installed_the_ray_executor_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UserError, match=r"--executor ray needs Ray: pip install -e '\.\[ray\]'"):
        check_ray_available()


# what Ray 2.60's client raises when the head's Ray Client proxy could not start the server it runs for a driver
SERVER_START_FAILED = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../ray/util/client/server/proxier.py", line 772, in Datapath\n    raise RuntimeError(\n'
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for detailed logs.\n"
)


def fake_ray(monkeypatch: pytest.MonkeyPatch, failures: list[BaseException]) -> types.SimpleNamespace:
    """A stand-in ``ray`` whose ``init`` raises each of ``failures`` in turn, then connects; it counts calls."""
    state = types.SimpleNamespace(inits=0, shutdowns=0)

    def init(**kwargs: object) -> None:
        state.inits += 1
        if failures:
            raise failures.pop(0)

    def shutdown() -> None:
        state.shutdowns += 1

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: False, init=init, shutdown=shutdown))
    return state


# the same crash seen a moment later by the proxy: a zombie as psutil looked at it
SERVER_WAS_A_ZOMBIE = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../ray/util/client/server/proxier.py", line 765, in Datapath\n'
    "    if not self.proxy_manager.start_specific_server(\n"
    '  File ".../ray/util/client/server/proxier.py", line 393, in start_specific_server\n    cmd = psutil_proc.cmdline()\n'
    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=18227)\n"
)


@pytest.mark.parametrize(("message", "last_line"), [
    (SERVER_START_FAILED, "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for detailed logs."),
    (SERVER_WAS_A_ZOMBIE, "psutil.ZombieProcess: PID still exists but it's a zombie (pid=18227)"),
])
def test_a_ray_client_server_that_failed_to_start_is_asked_again_and_each_retry_is_said(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], message: str, last_line: str
) -> None:
    """The head's Ray Client server process can crash at its start (measured: 10 of 56 fresh clusters,
    README): the driver asks again, up to CLIENT_CONNECT_TRIES in all, and says so each time."""
    ray = fake_ray(monkeypatch, [ConnectionAbortedError(message)] * (CLIENT_CONNECT_TRIES - 1))
    assert connect("ray://head:10001") is True
    assert ray.inits == CLIENT_CONNECT_TRIES and ray.shutdowns == CLIENT_CONNECT_TRIES - 1  # each failure cleaned up
    warnings = capsys.readouterr().err.splitlines()
    assert warnings[-1] == (
        f"harness: warning: --ray-address ray://head:10001: ConnectionAbortedError: Initialization failure from server: ... "
        f"{last_line}; asking again (try {CLIENT_CONNECT_TRIES} of {CLIENT_CONNECT_TRIES})"
    )
    assert len(warnings) == CLIENT_CONNECT_TRIES - 1


def test_a_ray_client_server_that_never_starts_is_exit_2_with_the_cause_and_what_avoided_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = fake_ray(monkeypatch, [ConnectionAbortedError(SERVER_START_FAILED)] * CLIENT_CONNECT_TRIES)
    with pytest.raises(UserError, match=r"Starting Ray client server failed\. See ray_client_server_23001\.err.*GRPC_ENABLE_FORK_SUPPORT=0"):
        connect("ray://head:10001")
    assert ray.inits == CLIENT_CONNECT_TRIES


@pytest.mark.parametrize(("address", "error"), [
    ("ray://head:10001", ConnectionError("ray client connection timeout")),  # nothing answers: asking again cannot help
    ("auto", ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")),
    ("10.0.0.1:6379", ConnectionAbortedError(SERVER_START_FAILED)),  # not a Ray Client address: not that failure
])
def test_any_other_failure_to_join_ray_is_exit_2_at_once(monkeypatch: pytest.MonkeyPatch, address: str, error: Exception) -> None:
    ray = fake_ray(monkeypatch, [error] * CLIENT_CONNECT_TRIES)
    with pytest.raises(UserError, match=rf"^--ray-address {address}: Ray could not start or connect: {type(error).__name__}: ") as raised:
        connect(address)
    assert ray.inits == 1 and ray.shutdowns == 1
    assert "GRPC_ENABLE_FORK_SUPPORT" not in str(raised.value)


def test_a_run_asks_ray_for_its_cpus_and_one_gpu_per_device(make_spec) -> None:
    assert task_resources(make_spec(), 2) == {"num_cpus": 2, "num_gpus": 0}
    assert task_resources(make_spec(accelerator="gpu"), 1) == {"num_cpus": 1, "num_gpus": 1}
    assert task_resources(make_spec(accelerator="gpu", devices=4, strategy="ddp"), 1) == {"num_cpus": 1, "num_gpus": 4}


def test_a_node_with_other_versions_is_refused_with_one_line(make_spec, tmp_path: Path) -> None:
    here = node_versions()
    assert version_mismatch(here, here) == ""
    assert version_mismatch({**here, "torch": "9.9"}, here) == f"torch {here['torch']} here, 9.9 on the driver"
    assert version_mismatch(here, {k: v for k, v in here.items() if k != "harness commit"}) == ""  # an installed wheel
    sweep = {"run_dir": str(tmp_path), "timeout_s": None, "versions": {**here, "lightning": "1.0"}, "cwd": ""}
    row_json, files = run_task(make_spec().to_json(), sweep)
    row = Result.from_dict(json.loads(row_json))
    assert files == b"" and row.status == "failed" and row.reason == f"refused: this node's versions differ from the driver's: lightning {here['lightning']} here, 1.0 on the driver"
    assert row.host and row.details["executor"] == "ray"
    assert not (tmp_path / "specs").exists()  # nothing ran


def test_a_node_that_does_not_see_the_run_folder_refuses_ray_files_shared(make_spec, tmp_path: Path) -> None:
    """``--ray-files shared`` promises that every node writes into the run folder; a node that does not read
    the driver's token there (another machine's disk at that path) refuses instead of writing elsewhere."""
    (tmp_path / TOKEN_FILE).write_text("the driver's token")
    sweep = {"run_dir": str(tmp_path), "timeout_s": None, "versions": node_versions(), "cwd": "", "files": "shared", "token": "another token"}
    row_json, files = run_task(make_spec().to_json(), sweep)
    row = Result.from_dict(json.loads(row_json))
    assert files == b"" and row.status == "failed"
    assert row.reason.startswith(f"refused: this node does not see the run folder {str(tmp_path)!r} (--ray-files shared)")
    assert not (tmp_path / "specs").exists()  # nothing ran


def test_the_local_executor_yields_each_row_with_its_host(make_spec, tmp_path: Path) -> None:
    (row,) = LocalExecutor("spawn").results([make_spec(max_epochs=1)], tmp_path, None)
    assert row.status == "ok", row.reason
    assert row.host and row.isolation == "spawn"
