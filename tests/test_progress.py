"""Training progress off a terminal: a line per tenth of the optimizer steps, counted in steps under
gradient accumulation, and the live bar's total in batches matching what it counts."""

import io
import re

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from crisp_pl.config import TrainConfig
from crisp_pl.training.progress import StepProgressBar, StepProgressLines, training_progress
from crisp_pl.training.trainer import build_trainer


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(max_steps: int, accumulate: int) -> L.Trainer:
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(400, 4), torch.randn(400, 1)), batch_size=2)
    trainer = build_trainer(TrainConfig(max_steps=max_steps, accelerator="cpu", devices=1), accumulate=accumulate)
    trainer.fit(Regression(), train_dataloaders=data)
    return trainer


def test_a_log_file_gets_a_line_per_tenth_of_the_steps(capsys):
    assert isinstance(training_progress(), StepProgressLines)  # pytest's captured stderr is no terminal
    trainer = _fit(max_steps=20, accumulate=3)
    assert trainer.global_step == 20
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train ")]
    steps = [int(re.match(r"train (\d+)/20 steps \((\d+)%\)", line).group(1)) for line in lines]
    assert steps == list(range(2, 21, 2)), lines
    assert "train/loss" in lines[-1] and "steps/s" in lines[-1] and lines[-1].endswith("0m00s left")


def test_the_live_bar_counts_batches_to_the_last_accumulated_step():
    out = io.StringIO()
    bar = StepProgressBar(console_kwargs={"force_terminal": True, "file": out, "width": 160})
    trainer = L.Trainer(max_steps=5, accumulate_grad_batches=3, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[bar])
    trainer.fit(Regression(), train_dataloaders=DataLoader(TensorDataset(torch.randn(400, 4), torch.randn(400, 1)), batch_size=2))
    final = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert "train (5 steps)" in final and "15/15" in final, final[-400:]


def test_off_a_terminal_a_bar_redraws_every_30_seconds_not_ten_times_a_second():
    import time

    from crisp_pl.progress import bar

    log = io.StringIO()
    for _ in bar(range(20), file=log, desc="embed"):  # pytest's stderr is no terminal
        time.sleep(0.02)
    redraws = log.getvalue().count("\r")
    assert "20/20" in log.getvalue() and redraws <= 2, log.getvalue()  # the start and the end, not one every 0.1 s


def test_lightning_says_which_accelerator_once_per_process_not_before_every_fit():
    import logging

    from crisp_pl.training.trainer import QuietLightning

    once = QuietLightning()
    said = [once.filter(logging.LogRecord("rank_zero", logging.INFO, "", 0, text, None, None)) for text in
            ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
             "GPU available: False, used: False", "`Trainer.fit` stopped", "`Trainer.fit` stopped", "GPU available: True (cuda), used: True",
             "💡 Tip: For seamless cloud uploads")]
    assert said == [True, True, False, True, True, True, False]  # other messages pass every time; a new accelerator line again
