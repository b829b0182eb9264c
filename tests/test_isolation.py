"""Fork server and spawn: the same run, the same numbers; nothing a run changes reaches the next one.

Runs go through the real runner (``run_all``), so each one is a real child process: forked from the
pre-imported server (``harness.executors.zygote``) or spawned cold. A probe LightningModule
(tests/probes/probe_models.py), imported by the runs as a user's own module would be, reports the
process-global state it finds, flips it, can allocate a known amount during fit, or kill itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.executors import zygote
from harness.executors.isolation import ForkServer, ForkServerError
from harness.executors.runner import Launchers, run_all
from harness.spec import read_results

MiB = 2**20


def comparable(details: dict) -> dict:
    """A row's details without what differs between any two processes: timings, contention, pids."""
    varying = ("foreign_cpu_share", "contention", "busy_cpus", "log", "cpu_percent", "warnings")  # warnings: contention
    return {k: v for k, v in details.items() if not any(word in k for word in varying)}


def test_fork_and_spawn_give_bit_identical_losses_and_the_same_details(make_spec, tmp_path: Path) -> None:
    rows = {}
    for isolation in ("fork", "spawn"):
        (result,) = run_all([make_spec(run_id=f"same-{isolation}")], tmp_path / isolation, show_progress=False, isolation=isolation)
        assert result.status == "ok", result.reason
        assert result.isolation == isolation and "isolation_note" not in result.details
        rows[isolation] = result
    fork, spawn = rows["fork"], rows["spawn"]
    assert (fork.train_loss, fork.val_loss, fork.test_loss) == (spawn.train_loss, spawn.val_loss, spawn.test_loss)
    assert [p["val_loss"] for p in fork.curve] == [p["val_loss"] for p in spawn.curve]
    assert (fork.steps, fork.optimizer_steps, fork.epochs, fork.precision) == (spawn.steps, spawn.optimizer_steps, spawn.epochs, spawn.precision)
    assert comparable(fork.details) == comparable(spawn.details)
    assert fork.mem_kind == spawn.mem_kind == "max_rss_fit"


def test_global_state_one_run_flips_does_not_reach_the_next(probe_spec, tmp_path: Path) -> None:
    reports = [tmp_path / f"state-{i}.json" for i in range(2)]
    specs = [probe_spec(f"flip-{i}", block_steps=2, state_report=str(path), flip=True) for i, path in enumerate(reports)]
    results = run_all(specs, tmp_path / "run", show_progress=False, isolation="fork")
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    assert [r.isolation for r in results] == ["fork", "fork"]
    first, second = (json.loads(path.read_text()) for path in reports)
    assert first["pid"] != second["pid"]
    first.pop("pid"), second.pop("pid")
    assert second == first  # the second run found what the first found, not what the first left
    assert second["matmul_precision"] == "highest" and second["probe_env"] is None and second["cudnn_benchmark"] is False


def test_a_trick_that_sets_threads_leaves_the_next_run_with_the_default(make_spec, tmp_path: Path) -> None:
    specs = [make_spec(["cpu-threads"], run_id="one-thread", max_epochs=1), make_spec(run_id="after", max_epochs=1)]
    threaded, after = run_all(specs, tmp_path, show_progress=False, isolation="fork")
    assert threaded.details["threads_in_fit"]["intra_op"] == 1
    import torch

    assert after.details["threads_in_fit"]["intra_op"] == torch.get_num_threads() > 0


def test_a_child_killed_with_sigkill_is_a_failed_row_and_the_server_serves_the_next(probe_spec, tmp_path: Path) -> None:
    specs = [probe_spec("killed", block_steps=2, kill=True), probe_spec("next", block_steps=2)]
    killed, following = run_all(specs, tmp_path, show_progress=False, isolation="fork")
    assert killed.status == "failed" and killed.reason.startswith("killed by SIGKILL")
    assert following.status == "ok", following.reason
    assert killed.isolation == following.isolation == "fork" and "isolation_note" not in following.details
    assert [r.run_id for r in read_results(tmp_path / "results.jsonl")] == ["killed", "next"]


def test_a_forked_run_past_its_timeout_is_killed_and_the_next_runs(make_spec, tmp_path: Path) -> None:
    # 500 epochs of digits: ~9,000 steps, many seconds even forked (a default tiny run, ~0.3 s once
    # forked, finished inside a 0.5 s timeout on an idle machine)
    hung, healthy = run_all(
        [make_spec(run_id="hang", max_epochs=500, checkpoints=False), make_spec(run_id="quick", max_epochs=1)],
        tmp_path, timeout_s=1.0, show_progress=False, isolation="fork",
    )
    assert hung.status == "failed" and hung.reason == "timed out after 1 s" and hung.isolation == "fork"
    # the healthy run may or may not fit in 1 s on a given machine; it is the server's answer that matters
    assert healthy.isolation == "fork" and healthy.reason in ("", "timed out after 1 s")


@pytest.mark.parametrize("isolation", ["fork", "spawn"])
def test_cpu_peak_memory_is_the_runs_own(isolation: str, probe_spec, tmp_path: Path) -> None:
    specs = [probe_spec("lean", block_steps=2), probe_spec("ballast", block_steps=2, ballast_mb=500)]
    lean, heavy = run_all(specs, tmp_path, show_progress=False, isolation=isolation)
    assert lean.status == heavy.status == "ok", (lean.reason, heavy.reason)
    assert lean.mem_kind == heavy.mem_kind == "max_rss_fit"
    extra = (heavy.peak_mem_bytes - lean.peak_mem_bytes) / MiB
    assert 450 < extra < 560, f"{isolation}: the 500 MB run peaked {extra:.0f} MiB above the lean one"


def test_multi_process_runs_are_spawned_and_say_why(make_spec, tmp_path: Path) -> None:
    using = Launchers("fork", tmp_path)
    launcher, note = using.choose(make_spec(devices=2, strategy="ddp"))
    assert launcher.name == "spawn" and "Lightning's own launcher" in note
    launcher, note = using.choose(make_spec())
    assert launcher.name == "fork" and note == ""
    assert Launchers("spawn", tmp_path).choose(make_spec())[0].name == "spawn"


def test_a_server_that_cannot_start_means_spawned_runs_that_say_so(make_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, env, cwd=""):
        raise ForkServerError("fork server: the CUDA driver (libcuda.so) is loaded in the fork server")

    monkeypatch.setattr(ForkServer, "start", refuse)
    (result,) = run_all([make_spec(run_id="fallback", max_epochs=1)], tmp_path, show_progress=False, isolation="fork")
    assert result.status == "ok" and result.isolation == "spawn"
    assert "libcuda.so" in result.details["isolation_note"] and "spawned instead" in result.details["isolation_note"]


def test_the_server_refuses_to_fork_once_cuda_or_a_python_thread_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import torch

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert "CUDA" not in zygote.fork_hazard()  # nothing here has touched CUDA
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert zygote.fork_hazard() == "CUDA is initialised in the fork server"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert zygote.fork_hazard() == "the fork server runs 2 Python threads"
