"""Training progress, in a terminal and in a log file.

A terminal gets Rich's live bar. A log file (a batch job, `nohup`, CI) gets nothing from it until the
fit ends, so there a line is written at every tenth of the steps, and at least every five minutes:
a 10-minute fit of a study otherwise sat silent. Both count optimizer steps; Lightning's own bars
count batches against a total in steps, which read "1448/362" under gradient accumulation.
"""

from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from rich.console import Console


class StepProgressBar(RichProgressBar):
    """Training is one endless epoch of draws bounded by `max_steps`: label the bar by steps, not as "Epoch 0/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        return f"train ({self.trainer.max_steps} steps)"

    @property
    def total_train_batches(self) -> int | float:
        """The batches left to `max_steps` (Lightning counts the steps left as batches), or the epoch's, if fewer."""
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps < 0:
            return super().total_train_batches
        return min(trainer.num_training_batches, (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches)


class StepProgressLines(ProgressBar):
    """One line per tenth of the steps (and at least every `every_s` seconds) on stderr, from rank zero:
    the step, the latest train and validation loss, the speed of this fit and the time left."""

    def __init__(self, every_s: float = 300.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, module) -> None:
        self._start_step, self._start = trainer.global_step, time.monotonic()
        self._last_line, self._last_tenth = self._start, self._tenth(trainer)

    def _tenth(self, trainer) -> int:
        return 10 * trainer.global_step // max(trainer.max_steps, 1)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        now, tenth = time.monotonic(), self._tenth(trainer)
        if tenth > self._last_tenth or now - self._last_line >= self.every_s:
            self._last_line, self._last_tenth = now, tenth
            print(self.line(trainer, now), file=sys.stderr, flush=True)

    def line(self, trainer, now: float) -> str:
        step, total = trainer.global_step, trainer.max_steps
        parts = [f"train {step}/{total} steps ({100 * step // max(total, 1)}%)"]
        for name in ("train/loss", "val/loss"):
            if name in trainer.callback_metrics:
                parts.append(f"{name} {float(trainer.callback_metrics[name]):.3f}")
        done, elapsed = step - self._start_step, now - self._start
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} steps/s, {_duration((total - step) / rate)} left")
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def training_progress() -> ProgressBar:
    """The live bar where someone watches (a terminal, a notebook), lines where the output goes to a file."""
    console = Console()
    return StepProgressBar() if console.is_terminal or console.is_jupyter else StepProgressLines()
