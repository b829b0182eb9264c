"""Bring your own model: a LightningModule and LightningDataModule defined outside the project's packages.

The module is written into tmp_path as a real file and imported by path (``byo_models:Net``), as a
user's own package would be: dict batches, its own metric names, its own batch size or none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest

from harness.cli import main
from harness.errors import UserError
from harness.spec import read_results
from harness.worker import execute
from harness.workloads.imported import parse_args_option

ROOT = Path(__file__).resolve().parent.parent

BYO_MODELS = textwrap.dedent(
    '''
    import torch
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, Dataset


    class DictSet(Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randn(n, 8, generator=g)
            self.y = self.x.sum(1, keepdim=True)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "y": self.y[i]}


    class Net(pl.LightningModule):
        """Logs val_mse, not val_loss; has an lr in hparams and no batch_size."""

        def __init__(self, hidden=4, lr=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

        def _loss(self, batch):
            return torch.nn.functional.mse_loss(self.net(batch["x"]), batch["y"])

        def training_step(self, batch, batch_idx):
            return self._loss(batch)

        def validation_step(self, batch, batch_idx):
            self.log("val_mse", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class Data(pl.LightningDataModule):
        """No batch_size attribute: the batch finder has nothing to scale."""

        def __init__(self, n=256, batch=32):
            super().__init__()
            self.n, self.batch = n, batch

        def train_dataloader(self):
            return DataLoader(DictSet(self.n, 0), batch_size=self.batch, shuffle=True)

        def val_dataloader(self):
            return DataLoader(DictSet(64, 1), batch_size=self.batch)


    class SizedData(Data):
        def __init__(self, n=256, batch_size=32):
            super().__init__(n, batch_size)
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(DictSet(self.n, 0), batch_size=self.batch_size, shuffle=True)


    class NoVal(Data):
        val_dataloader = pl.LightningDataModule.val_dataloader


    class NotAModule:
        pass
    '''
)


@pytest.fixture
def byo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding byo_models.py, importable in this process and the current directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "byo_models.py").write_text(BYO_MODELS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    sys.modules.pop("byo_models", None)
    return folder


class Captured(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.hidden = pl_module.net[0].out_features


def byo_spec(make_spec, tricks=None, **overrides):
    fields = dict(workload="byo_models:Net", datamodule="byo_models:Data", init_args={"hidden": 16}, max_epochs=1)
    fields.update(overrides)
    return make_spec(tricks, **fields)


def test_imported_module_runs_with_dict_batches_and_its_init_args(byo: Path, make_spec) -> None:
    captured = Captured()
    result = execute(byo_spec(make_spec), extra_callbacks=[captured])
    assert result.status == "ok", result.reason
    assert captured.hidden == 16  # --init-args reached the module
    assert result.samples_per_s and result.samples_per_s > 0
    assert result.batch_size == 32  # the datamodule's own, read from its dict batches
    assert result.dataset == "byo_models:Data"
    assert result.details["monitor"] == "val_loss" and result.details["init_args"] == {"hidden": 16}
    assert "no plain PyTorch loss" in result.details["flops_note"]
    assert "test_step" in result.details["test_skipped"]  # no test set: the column stays empty
    assert result.val_loss is None and result.details["metrics"]["val_mse"] > 0
    # a metric name that is never logged costs the best checkpoint, not the row: last.ckpt stays
    assert set(result.checkpoints) == {"last"}
    assert "'val_loss' is never logged (logged: val_mse)" in result.details["test_weights"]


def test_monitor_names_the_validation_metric(byo: Path, make_spec) -> None:
    skipped = execute(byo_spec(make_spec, ["early-stopping"]))
    assert skipped.status == "skipped"
    assert "no 'val_loss'" in skipped.reason and "val_mse" in skipped.reason and "--monitor" in skipped.reason

    result = execute(byo_spec(make_spec, ["early-stopping"], monitor="val_mse"))
    assert result.status == "ok", result.reason
    assert result.details["monitor"] == "val_mse" and result.details["val_loss_from"] == "val_mse"
    assert result.val_loss is not None and result.details["best_val_loss"] is not None
    assert set(result.checkpoints) == {"best", "last"} and result.details["test_weights"].startswith("best.ckpt")
    assert result.curve and all(point["val_loss"] is not None for point in result.curve)  # time-to-target works


def test_tricks_that_need_what_the_module_lacks_are_skipped(byo: Path, make_spec) -> None:
    finder = execute(byo_spec(make_spec, ["batch-size-finder"]))
    assert finder.status == "skipped" and "batch_size attribute" in finder.reason and "Net" in finder.reason
    no_val = execute(byo_spec(make_spec, ["early-stopping"], datamodule="byo_models:NoVal"))
    assert no_val.status == "skipped" and "NoVal defines no val_dataloader" in no_val.reason

    sized = execute(byo_spec(make_spec, ["batch-size-finder"], datamodule="byo_models:SizedData"))
    assert sized.status == "ok", sized.reason
    assert sized.details["initial_batch_size"] == 32 and sized.batch_size == sized.details["applied_batch_size"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--workload", "byo_models:Nope", "--datamodule", "byo_models:Data"], "module 'byo_models' has no 'Nope'; LightningModule classes there: Net"),
        (["--workload", "byo_models:NotAModule", "--datamodule", "byo_models:Data"], "is class byo_models.NotAModule, not a subclass of lightning.pytorch.LightningModule"),
        (["--workload", "no_such_pkg.models:Net", "--datamodule", "byo_models:Data"], "cannot import 'no_such_pkg.models'"),
        (["--workload", "byo_models:Net"], "needs --datamodule"),
        (["--workload", "byo_models:Net", "--datamodule", "byo_models:Net"], "'byo_models:Net' is class byo_models.Net, not a subclass of lightning.pytorch.LightningDataModule"),
        (["--workload", "byo_models:Net", "--datamodule", "byo_models:Data", "--init-args", "{hidden: 1"], "--init-args"),
        (["--datamodule", "byo_models:Data"], "apply to an imported --workload"),
    ],
)
def test_bad_paths_exit_2_with_one_line(byo: Path, extra: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = byo / "reports"
    assert main(["run", *extra, "--accelerator", "cpu", "--dataset", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("harness: error: ") and expected in err[-1], err
    assert not out.exists()


def test_parity_refuses_an_imported_module(byo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["parity", "--workload", "byo_models:Net", "--datamodule", "byo_models:Data", "--accelerator", "cpu", "--out", str(byo)]
    assert main(argv) == 2
    assert "plain PyTorch loss" in capsys.readouterr().err


def test_init_args_from_json_or_a_file(tmp_path: Path) -> None:
    assert parse_args_option('{"hidden": 128}', "--init-args") == {"hidden": 128}
    assert parse_args_option(None, "--init-args") == {}
    (tmp_path / "net.yaml").write_text("hidden: 64\nlr: 0.1\n")
    (tmp_path / "net.json").write_text(json.dumps({"hidden": 32}))
    assert parse_args_option(f"@{tmp_path / 'net.yaml'}", "--init-args") == {"hidden": 64, "lr": 0.1}
    assert parse_args_option(str(tmp_path / "net.json"), "--init-args") == {"hidden": 32}
    with pytest.raises(UserError, match="does not exist"):
        parse_args_option("@missing.yaml", "--init-args")
    with pytest.raises(UserError, match="must hold a mapping"):
        parse_args_option("[1, 2]", "--datamodule-args")


def test_cli_end_to_end_from_the_users_folder(byo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "harness", "run", "--workload", "byo_models:Net", "--datamodule", "byo_models:Data",
        "--init-args", '{"hidden": 16}', "--tricks", "batch-size-finder,early-stopping", "--batch-size", "128",
        "--accelerator", "cpu", "--max-epochs", "1", "--repeats", "1", "--block-steps", "2", "--quiet", "--out", str(byo / "reports"),
    ]
    completed = subprocess.run(command, cwd=byo, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "warning: --batch-size does not apply to byo_models:Net" in completed.stderr
    (run_dir,) = (byo / "reports").iterdir()
    assert sorted(p.name for p in (run_dir / "specs").glob("*-r0.json"))[0] == "byo_models.Net-cpu-baseline-r0.json"  # no ':'
    assert (run_dir / "tb" / "byo_models.Net" / "cpu" / "baseline").is_dir()
    rows = {row.trick: row for row in read_results(run_dir / "results.jsonl")}
    assert rows["baseline"].status == "ok"
    assert rows["baseline"].samples_per_s > 0 and rows["baseline"].details["init_args"] == {"hidden": 16}
    assert rows["baseline"].workload == "byo_models:Net" and rows["baseline"].batch_size == 32
    assert rows["batch-size-finder"].status == "skipped" and "batch_size attribute" in rows["batch-size-finder"].reason
    assert rows["early-stopping"].status == "skipped" and "val_mse" in rows["early-stopping"].reason
    assert (run_dir / "report.md").exists()
