"""A user's own LightningModule, as the harness's runs import it: ``--workload probe_models:Probe
--datamodule probe_models:Data`` with this folder on PYTHONPATH (the runs' processes inherit it).

One module for the tests of what happens around a run (tests/test_isolation.py, test_runner_scratch.py,
test_ray_executor.py): it trains a linear map, and on request reports the process-global state it
finds, reports and writes into the scratch folder the harness gave it, holds a known amount of memory,
flips process-global state at the end of fit, kills its own process (or first the Ray worker that
started it), or sleeps past a timeout. Not a test module: pytest does not collect it.
"""

import json
import os
import signal
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


def state() -> dict:
    """The process-global state a run inherits, as a run sees it at its start."""
    return {
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "probe_env": os.environ.get("HARNESS_PROBE_FLAG"),
        "threads": torch.get_num_threads(),
        "grad_enabled": torch.is_grad_enabled(),
        "default_dtype": str(torch.get_default_dtype()),
        "pid": os.getpid(),
    }


class Probe(pl.LightningModule):
    """``state_report``: a JSON file for ``state()`` at construction; ``scratch_report``: one for the scratch
    folder (``$HARNESS_RUN_SCRATCH``) at the start of training, after writing 1000 bytes into it;
    ``ballast_mb``: memory held from the start of training, every page touched; ``flip``: process-global
    state changed at the end of fit, as a careless trick or module would; ``kill``: SIGKILL at the start of
    training, of this process (any true value) or first of its parent, the Ray worker (``"task"``);
    ``sleep``: seconds slept at the start of training."""

    def __init__(self, state_report="", scratch_report="", ballast_mb=0, flip=False, kill="", sleep=0):
        super().__init__()
        self.save_hyperparameters()
        if state_report:
            with open(state_report, "w") as f:
                json.dump(state(), f)
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_train_start(self):
        if self.hparams.scratch_report:
            scratch = os.environ.get("HARNESS_RUN_SCRATCH", "")
            existed = os.path.isdir(scratch)
            if existed:
                with open(os.path.join(scratch, "written-by-the-run"), "w") as f:
                    f.write("x" * 1000)
            with open(self.hparams.scratch_report, "w") as f:
                json.dump({"scratch": scratch, "existed": existed, "ppid": os.getppid()}, f)
        if self.hparams.kill == "task":  # the Ray worker running this task; then this process
            os.kill(os.getppid(), signal.SIGKILL)
        if self.hparams.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hparams.ballast_mb:  # filled, so every page is resident
            self.ballast = bytearray(b"\x01") * (self.hparams.ballast_mb * 2**20)
        time.sleep(self.hparams.sleep)

    def on_fit_end(self):
        if self.hparams.flip:
            torch.set_float32_matmul_precision("medium")
            torch.backends.cudnn.benchmark = True
            torch.use_deterministic_algorithms(True, warn_only=True)
            os.environ["HARNESS_PROBE_FLAG"] = "leaked"
            torch.set_num_threads(1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Data(pl.LightningDataModule):
    """256 fixed samples, batches of 32: 8 steps an epoch."""

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=32)
