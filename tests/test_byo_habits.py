"""Bring your own model: what third-party LightningModules commonly do must not cost a row (issue 16).

Each class of ``byo_habits.py`` (written into tmp_path and imported by path, as a user's package
would be) has one habit of public Lightning modules; each test runs it in-process and checks that
the row keeps its measurements and says the right thing.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.errors import describe
from harness.runfolder.checkpoints import OwnCheckpointIO
from harness.runfolder.rundir import RESULTS, write_plan
from harness.spec import read_results
from harness.worker import execute

HABITS = textwrap.dedent(
    '''
    import numpy as np
    import torch
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset


    def _data(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 8, generator=g)
        return TensorDataset(x, x.sum(1, keepdim=True))


    class Data(pl.LightningDataModule):
        """No batch_size attribute; train, val and test loaders."""

        def __init__(self, n=256, batch=32, val_drop_last=False, val_n=64):
            super().__init__()
            self.n, self.batch, self.val_drop_last, self.val_n = n, batch, val_drop_last, val_n

        def train_dataloader(self):
            return DataLoader(_data(self.n, 0), batch_size=self.batch, shuffle=True)

        def val_dataloader(self):
            return DataLoader(_data(self.val_n, 1), batch_size=self.batch, drop_last=self.val_drop_last)

        def test_dataloader(self):
            return DataLoader(_data(64, 2), batch_size=self.batch)


    class SizedData(Data):
        def __init__(self, n=256, batch_size=32):
            super().__init__(n, batch_size)
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(_data(self.n, 0), batch_size=self.batch_size, shuffle=True)


    class NeedsPackage(Data):
        """prepare_data needs what is not installed (or the network): every run would fail the same way."""

        def prepare_data(self):
            import no_such_dataset_package  # noqa: F401


    class Base(pl.LightningModule):
        def __init__(self, lr=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))

        def forward(self, x):
            return self.net(x)

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch))

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class NumpyScheduler(torch.optim.lr_scheduler.LambdaLR):
        """A custom scheduler that keeps a numpy scalar in its state (as many hand-written ones do)."""

        def __init__(self, optimizer):
            self.floor = np.float64(0.5)
            super().__init__(optimizer, lambda epoch: 1.0)


    class NumpyState(Base):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
            return [opt], [NumpyScheduler(opt)]


    class ClassHparams(Base):
        """An activation class passed to save_hyperparameters."""

        def __init__(self, activation=torch.nn.Tanh, lr=0.01):
            super().__init__(lr)
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 4), activation(), torch.nn.Linear(4, 1))


    class StepLogged(Base):
        """Logs val/test loss with on_step=True too, as Lightning's own example autoencoder does."""

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch), on_step=True)

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self._loss(batch), on_step=True)


    class OwnName(Base):
        def validation_step(self, batch, batch_idx):
            self.log("val_mse", self._loss(batch), on_step=True, on_epoch=True)


    class TwoOptimizers(Base):
        """Manual optimization with two optimizers (a GAN's shape)."""

        def __init__(self, lr=0.01):
            super().__init__(lr)
            self.automatic_optimization = False
            self.other = torch.nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            x, y = batch
            loss_a = torch.nn.functional.mse_loss(self(x), y)
            opt_a.zero_grad(); self.manual_backward(loss_a); opt_a.step()
            loss_b = torch.nn.functional.mse_loss(self.other(x), y)
            opt_b.zero_grad(); self.manual_backward(loss_b); opt_b.step()
            self.log("train_loss", loss_a)

        def configure_optimizers(self):
            return torch.optim.SGD(self.net.parameters(), lr=self.hparams.lr), torch.optim.SGD(self.other.parameters(), lr=self.hparams.lr)


    class GanLogging(TwoOptimizers):
        """Logs g_loss and d_loss, no train_loss, and returns nothing from training_step."""

        def training_step(self, batch, batch_idx):
            opt_a, opt_b = self.optimizers()
            x, y = batch
            loss_a = torch.nn.functional.mse_loss(self(x), y)
            opt_a.zero_grad(); self.manual_backward(loss_a); opt_a.step()
            loss_b = torch.nn.functional.mse_loss(self.other(x), y)
            opt_b.zero_grad(); self.manual_backward(loss_b); opt_b.step()
            self.log_dict({"g_loss": loss_a, "d_loss": loss_b})


    class Picky(Base):
        """Its constructor rejects a value (the parent's signature check cannot see that)."""

        def __init__(self, lr=0.01):
            if lr > 1:
                raise ValueError(f"lr={lr} is too large for this model")
            super().__init__(lr)


    class TwoOptimizersLate(TwoOptimizers):
        """Its optimizers need the Trainer (as schedulers sized by estimated_stepping_batches do)."""

        def configure_optimizers(self):
            assert self.trainer.max_epochs
            return super().configure_optimizers()


    class ForwardTakesTwo(Base):
        """forward(x, y): not what predict's default predict_step (forward(batch)) or export (forward(x)) call."""

        def forward(self, x, y):
            return self.net(x) - y

        def _loss(self, batch):
            return self(*batch).pow(2).mean()


    class BrokenTest(Base):
        def test_step(self, batch, batch_idx):
            raise RuntimeError("\\x1b[1mtest set is broken\\x1b[0m\\nsecond line")


    class NoForward(Base):
        forward = pl.LightningModule.forward

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)
    '''
)


@pytest.fixture
def habits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "byo_habits.py").write_text(HABITS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    sys.modules.pop("byo_habits", None)
    return folder


def habit_spec(make_spec, module: str, tricks=None, datamodule: str = "Data", **overrides):
    fields = dict(workload=f"byo_habits:{module}", datamodule=f"byo_habits:{datamodule}", max_epochs=2, block_steps=2)
    fields.update(overrides)
    return make_spec(tricks, **fields)


def assert_measured(result) -> None:
    """The fit's measurements are in the row."""
    assert result.samples_per_s and result.samples_per_s > 0
    assert result.train_loss is not None and result.curve


@pytest.mark.parametrize("module", ["NumpyState", "ClassHparams"])
def test_own_best_checkpoint_is_tested_whatever_it_holds(habits: Path, make_spec, module: str) -> None:
    """A numpy scalar in a scheduler's state, a class in the hyperparameters: torch's weights-only load
    refuses both, but the run wrote best.ckpt itself, in this process, and tests it."""
    result = execute(habit_spec(make_spec, module))
    assert result.status == "ok", result.reason
    assert_measured(result)
    assert result.test_loss is not None and result.val_loss is not None
    assert result.details["test_weights"].startswith("best.ckpt") and "test_error" not in result.details


def test_lr_finder_restores_lightnings_own_temporary_checkpoint(habits: Path, make_spec) -> None:
    result = execute(habit_spec(make_spec, "NumpyState", ["lr-finder"], trick_params={"lr-finder": {"num_training": "20"}}))
    assert result.status == "ok", result.reason
    assert result.details["found_lr"] > 0 and result.test_loss is not None


def test_a_failure_after_fit_keeps_the_measurements(habits: Path, make_spec) -> None:
    result = execute(habit_spec(make_spec, "BrokenTest"))
    assert result.status == "ok"
    assert_measured(result)
    assert result.val_loss is not None and result.test_loss is None
    assert result.details["test_error"] == "RuntimeError: test set is broken"  # one line, no colour codes
    assert "test after fit failed (RuntimeError: test set is broken)" in result.reason and "\n" not in result.reason
    assert result.reason in result.details["warnings"]


def test_checkpoints_from_elsewhere_stay_weights_only(tmp_path: Path) -> None:
    """Only the files this process wrote are read in full: one written by anyone else (a downloaded run
    folder's last.ckpt, read by resume) or changed since is refused, naming the global."""
    import numpy as np

    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "lr_schedulers": [{"floor": np.float64(0.5)}]}
    io = OwnCheckpointIO()
    own, foreign = tmp_path / "own.ckpt", tmp_path / "foreign.ckpt"
    io.save_checkpoint(checkpoint, own)
    torch.save(checkpoint, foreign)
    assert io.load_checkpoint(own)["lr_schedulers"][0]["floor"] == 0.5
    for path, weights_only in ((foreign, None), (own, True)):
        with pytest.raises(Exception) as refused:
            io.load_checkpoint(path, weights_only=weights_only)
        line = describe(refused.value)
        assert line.startswith("UnpicklingError: torch.load(weights_only=True) refused the global numpy") and "\x1b" not in line
    torch.save(checkpoint, own)  # replaced since this process wrote it
    with pytest.raises(Exception, match="Weights only load failed"):
        io.load_checkpoint(own)


def test_metrics_logged_on_step_fill_the_columns(habits: Path, make_spec) -> None:
    """``self.log("val_loss", ..., on_step=True)``: Lightning returns val_loss_epoch, and during fit its
    ``val_loss`` is the last batch's value; the columns, best.ckpt and early stopping use the epoch mean."""
    result = execute(habit_spec(make_spec, "StepLogged", ["early-stopping"], max_epochs=1))
    assert result.status == "ok", result.reason
    assert_measured(result)
    assert result.val_loss is not None and result.test_loss is not None
    assert result.details["val_loss_from"] == "val_loss_epoch" and result.details["test_loss_from"] == "test_loss_epoch"
    assert result.details["monitor"] == "val_loss_epoch" and result.details["test_weights"].startswith("best.ckpt")
    assert result.details["best_val_loss"] is not None
    assert all(point["val_loss"] is not None for point in result.curve)
    assert result.curve[-1]["val_loss"] == pytest.approx(result.val_loss)  # the epoch mean, not the last batch's


def test_monitor_fills_the_val_column_under_lightnings_name(habits: Path, make_spec) -> None:
    result = execute(habit_spec(make_spec, "OwnName", monitor="val_mse"))
    assert result.status == "ok", result.reason
    assert result.val_loss is not None and result.details["val_loss_from"] == "val_mse_epoch"
    assert result.details["test_weights"].startswith("best.ckpt") and result.curve


def test_grad_accumulation_needs_no_batch_size_in_its_default_mode(habits: Path, make_spec) -> None:
    result = execute(habit_spec(make_spec, "Base", ["grad-accumulation"]))  # Data has no batch_size attribute
    assert result.status == "ok", result.reason
    assert_measured(result)
    assert result.details["accumulate_grad_batches"] == 4 and result.batch_size == 32  # read from its batches
    assert result.optimizer_steps < result.steps

    same_effective = {"grad-accumulation": {"mode": "same-effective-batch"}}
    skipped = execute(habit_spec(make_spec, "Base", ["grad-accumulation"], trick_params=same_effective))
    assert skipped.status == "skipped"
    assert "Data has no batch_size attribute" in skipped.reason and "mode=same-micro-batch" in skipped.reason


@pytest.mark.parametrize(
    ("trick", "lightning_says"),
    [
        ("grad-clipping", "Automatic gradient clipping is not supported for manual optimization"),
        ("grad-accumulation", "Automatic gradient accumulation is not supported for manual optimization"),
        ("lr-finder", "learning rate finder only works with single optimizer"),
        ("swa", "SWA currently works with 1 `optimizer`"),
    ],
)
def test_tricks_lightning_refuses_for_two_manual_optimizers_are_skipped(habits: Path, make_spec, trick: str, lightning_says: str) -> None:
    """A GAN's shape: manual optimization, two optimizers. Found before the run (no training happened)."""
    result = execute(habit_spec(make_spec, "TwoOptimizers", [trick]))
    assert result.status == "skipped", result.reason
    assert lightning_says in result.reason and "TwoOptimizers" in result.reason
    assert not result.steps and result.fit_s is None


def test_a_refusal_found_only_at_run_time_is_a_skip_too(habits: Path, make_spec) -> None:
    """configure_optimizers needs the Trainer, so the count is unknown before the run: Lightning's refusal then."""
    result = execute(habit_spec(make_spec, "TwoOptimizersLate", ["swa"]))
    assert result.status == "skipped", result.reason
    assert result.reason == "swa: Lightning refuses it here: SWA currently works with 1 `optimizer`."
    baseline = execute(habit_spec(make_spec, "TwoOptimizersLate"))
    assert baseline.status == "ok", baseline.reason
    assert baseline.samples_per_s and baseline.samples_per_s > 0


@pytest.fixture
def trained(habits: Path, make_spec) -> Path:
    """A run folder with an ok row of each module whose forward predict and export cannot use."""
    specs = [
        habit_spec(make_spec, module, max_epochs=1, run_id=f"byo_habits.{module}-cpu-baseline-r0")
        for module in ("NoForward", "ForwardTakesTwo")
    ]
    run_dir = Path(specs[0].run_dir)
    write_plan(run_dir, specs, "test")
    results = [execute(spec) for spec in specs]
    assert [r.status for r in results] == ["ok", "ok"], [r.reason for r in results]
    (run_dir / RESULTS).write_text("".join(r.to_json() + "\n" for r in results))
    return run_dir


@pytest.mark.parametrize("command", ["predict", "export"])
@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("NoForward", "NoForward defines no forward"),
        ("ForwardTakesTwo", "missing 1 required positional argument: 'y'"),
    ],
)
def test_predict_and_export_say_what_forward_lacks_in_one_line(
    trained: Path, command: str, module: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--format", "torchscript"] if command == "export" else []
    argv = [command, str(trained), "--trick", "baseline", "--workload", f"byo_habits:{module}", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: "), err  # no traceback
    assert expected in err[0] and "define forward(self, x) taking the batch's first element" in err[0]
    if command == "export" and module == "ForwardTakesTwo":
        assert "or set ForwardTakesTwo.example_input_array to an input it takes" in err[0]
    if command == "predict" and module == "ForwardTakesTwo":
        assert "default predict_step calls ForwardTakesTwo.forward(batch)" in err[0] and "predict_step" in err[0]


def test_resume_reads_a_run_folders_checkpoint_weights_only(habits: Path, make_spec) -> None:
    """The next process did not write last.ckpt: resume stays weights-only and says which global it refused."""
    first = execute(habit_spec(make_spec, "NumpyState", max_epochs=1))
    assert first.status == "ok", first.reason
    resumed = execute(habit_spec(make_spec, "NumpyState", max_epochs=2, resume_from=first.checkpoints["last"]))
    assert resumed.status == "failed"
    assert resumed.reason.startswith("UnpicklingError: torch.load(weights_only=True) refused the global numpy")
    assert "\x1b" not in resumed.reason


def test_a_val_loader_that_drops_its_only_batch_is_named_not_called_missing(habits: Path, make_spec) -> None:
    result = execute(habit_spec(make_spec, "Base", datamodule_args={"val_n": 20, "val_drop_last": True}))
    assert result.status == "ok", result.reason
    assert result.samples_per_s and result.train_loss is not None  # no curve: no epoch was validated
    assert result.val_loss is None and result.test_loss is not None
    skipped = result.details["validate_skipped"]
    assert "Data.val_dataloader() yielded 0 batches" in skipped and "drop_last=True" in skipped and "20 samples" in skipped
    assert "no validation loop" not in result.details["test_weights"] and "no epoch was validated" in result.details["test_weights"]


def test_the_batch_size_finder_leaves_the_budget_something_to_measure(habits: Path, make_spec) -> None:
    """On a CPU the search never runs out of memory: uncapped it climbs to the 256 samples of the training
    set, and 2 epochs of 1-2 batches leave at most one timing block after the warm-up."""
    result = execute(habit_spec(make_spec, "Base", ["batch-size-finder"], datamodule="SizedData"))
    assert result.status == "ok", result.reason
    assert_measured(result)
    assert result.details["search_cap"] == 85  # 256 // ceil(2 x (1 + 2) / 2 epochs)
    assert "search capped at 85" in result.details["measure_cap_note"]
    assert result.batch_size == result.details["applied_batch_size"] <= 85
    assert result.blocks_measured >= 2


@pytest.mark.parametrize(
    ("workload", "extra", "expected"),
    [
        ("byo_habits:Base", ["--datamodule", "byo_habits:NeedsPackage"], "No module named 'no_such_dataset_package'"),
        ("byo_habits:Picky", ["--datamodule", "byo_habits:Data", "--init-args", '{"lr": 5}'], "lr=5 is too large for this model"),
    ],
)
def test_a_baseline_that_fails_before_training_stops_the_workloads_other_runs(
    habits: Path, workload: str, extra: list[str], expected: str
) -> None:
    """A prepare_data that needs a missing package, a constructor that rejects a value: every run would fail so."""
    out = habits / "reports"
    argv = [
        "run", "--workload", workload, *extra, "--tricks", "grad-clipping,swa",
        "--accelerator", "cpu", "--max-epochs", "1", "--repeats", "1", "--quiet", "--out", str(out),
        "--seed", "4",  # its shuffled order runs the baseline first for both modules, so the stop shows
    ]
    assert main(argv) == 1
    (run_dir,) = out.iterdir()
    stored = read_results(run_dir / RESULTS)  # in the order they ran: shuffled (seeded), the baseline anywhere
    rows = {row.trick: row for row in stored}
    assert rows["baseline"].status == "failed" and expected in rows["baseline"].reason
    after = [row.trick for row in stored[[row.trick for row in stored].index("baseline") + 1:]]
    for trick in ("grad-clipping", "swa"):
        assert rows[trick].status == "failed" and expected in rows[trick].reason
        if trick in after:  # not started: the baseline's failure said every run would fail so
            assert rows[trick].reason.startswith(f"not run: the baseline {rows['baseline'].run_id} failed before training")
    ran = {p.name for p in (run_dir / "logs").glob("*.log") if "forkserver" not in p.name}
    assert ran == {f"{row.run_id}.log" for row in stored if not row.reason.startswith("not run:")}
    assert after, "the seeded order put the baseline last: pick a seed that shows the stop"


def test_a_baseline_that_a_trick_may_fix_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_spec) -> None:
    from harness.commands.run_cmd import run_with_progress
    from harness.spec import Result

    def run_one(spec, run_dir, timeout_s=None, **launch):
        reason = "non-finite loss: nan at step 3" if spec.label == "baseline" else ""
        return Result(run_id=spec.run_id, trick=spec.label, workload=spec.workload, dataset="d", accelerator="cpu",
                      repeat=0, status="failed" if reason else "ok", reason=reason, steps=3 if not reason else None, wall_s=0.1)

    monkeypatch.setattr("harness.executors.runner.run_one", run_one)
    specs = [make_spec(tricks, run_id=f"r-{'-'.join(tricks) or 'baseline'}") for tricks in ([], ["grad-clipping"])]
    results = run_with_progress(specs, tmp_path / "run", None, quiet=True)
    assert [r.status for r in results] == ["failed", "ok"]


def test_a_module_of_the_old_pytorch_lightning_namespace_is_told_the_fix(habits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pytorch_lightning")
    (habits / "old_style.py").write_text(
        "import pytorch_lightning as pl\n\nclass Old(pl.LightningModule):\n    pass\n"
    )
    argv = ["run", "--workload", "old_style:Old", "--datamodule", "byo_habits:Data", "--accelerator", "cpu", "--out", str(habits / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "subclasses pytorch_lightning.LightningModule (the old package name)" in err[-1]
    assert "import lightning.pytorch as pl" in err[-1]


def test_a_training_step_that_returns_no_loss_still_says_what_it_logged(habits: Path, make_spec) -> None:
    two = execute(habit_spec(make_spec, "TwoOptimizers", run_id="two"))
    assert two.status == "ok", two.reason
    assert two.train_loss is not None and "logged train_loss" in two.details["train_loss_from"]
    gan = execute(habit_spec(make_spec, "GanLogging", run_id="gan"))
    assert gan.status == "ok", gan.reason
    assert gan.train_loss is None and set(gan.details["train_metrics"]) == {"g_loss", "d_loss"}
    assert "logged in training: d_loss, g_loss" in gan.details["train_loss_note"]


def test_restoring_a_run_without_best_says_why_it_has_none() -> None:
    from harness.runfolder.restore import choose_checkpoint
    from harness.spec import Result

    why = "best.ckpt not kept: 'val_loss' is never logged (logged: val_mse); name the validation metric with --monitor"
    row = Result(run_id="r", trick="baseline", workload="w", dataset="d", accelerator="cpu", repeat=0, status="ok",
                 checkpoints={"last": "checkpoints/r/last.ckpt"}, details={"test_weights": f"final weights: {why}"})
    name, notes = choose_checkpoint(row)
    assert name == "last" and notes == [f"run r has no best.ckpt ({why}): using last.ckpt"]
