"""The one place a Lightning Trainer is built: pretraining, fine-tuning and the auxiliary LMs of
selection methods all train through `build_trainer`, so they share precision, clipping,
determinism and the sampler contract (our GroupSampler, never Lightning's distributed sampler).

`fit_resumable` (pretraining: periodic checkpoints, exact resume) and `fit_early_stopped`
(fine-tuning: keep the best validation checkpoint) are the two ways a stage fits a model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from crisp_pl.config import TrainConfig
from crisp_pl.training.progress import training_progress


class QuietLightning(logging.Filter):
    """Lightning's advertisement ("💡 Tip") dropped, and its "GPU available: ..., used: ..." lines once per
    process, not before every fit (two lines a point, 36 in an 18-point study's log); a changed line
    (another accelerator) is shown again."""

    ONCE = ("GPU available", "TPU available", "HPU available")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("💡 Tip"):
            return False
        if not message.startswith(self.ONCE):
            return True
        new = message not in self.seen
        self.seen.add(message)
        return new


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(QuietLightning())
# a deprecation inside Lightning itself, on every fit
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# on every resume: the sampler restarts at the restored step's sample by itself (crisp_pl.sampling.GroupSampler),
# so a mid-epoch checkpoint resumes the exact stream (tests/test_data.py) without a resumable dataloader
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended")


class ValidationCurve(Callback):
    """The validation loss at every check, kept with the stage (`curves.json`): a point that reuses a cached
    model logs the curve from it, so its MLflow run and the study's figures show what the model did. Its
    state rides in the checkpoints, so a resumed run keeps the checks made before the kill."""

    FILE = "curves.json"

    def __init__(self) -> None:
        self.points: list[list[float]] = []

    def on_validation_end(self, trainer, module) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if not trainer.sanity_checking and loss is not None:
            # the step Lightning's loggers give the check: 0-based, the check after the 6th optimizer step is step 5
            self.points.append([trainer.global_step - 1, float(loss)])

    def state_dict(self) -> dict:
        return {"val/loss": self.points}

    def load_state_dict(self, state: dict) -> None:
        self.points = [list(p) for p in state["val/loss"]]

    def write(self, trainer, folder: Path) -> None:
        if trainer.is_global_zero:
            (folder / self.FILE).write_text(json.dumps(self.state_dict()))


class ResumeCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every_n_train_steps` optimizer steps, saved after the step's validation where the two
    fall on one step. Lightning saves first and does not repeat the check on resume, so a kill between the
    two lost that check from the curves."""

    def __init__(self, validate_every: int | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.validate_every = validate_every

    def _validates_now(self, trainer) -> bool:
        return bool(self.validate_every) and trainer.global_step % self.validate_every == 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self._validates_now(trainer):
            super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer, module) -> None:
        if self._validates_now(trainer):
            super().on_train_batch_end(trainer, module, None, None, 0)  # the step's save, now that the check is in
        super().on_validation_end(trainer, module)


def trainer_kwargs(train: TrainConfig) -> dict:
    """The `lightning.Trainer` arguments a TrainConfig decides; callers add logger, callbacks, validation."""
    on_cuda = torch.cuda.is_available() and train.accelerator in ("auto", "gpu", "cuda")
    precision = train.precision
    if precision == "auto":
        precision = "bf16-mixed" if on_cuda else "32-true"
    return {
        "max_steps": train.max_steps,
        "gradient_clip_val": train.grad_clip,
        "gradient_clip_algorithm": "norm",
        "precision": precision,
        "accelerator": train.accelerator,
        "devices": train.devices,
        "num_nodes": train.num_nodes,
        "strategy": train.strategy,
        "log_every_n_steps": train.log_every,
        # Deterministic kernels are nearly free on the CPU; on GPU they cost speed (and flash
        # attention's backward has none), so there runs stay seeded but not bitwise reproducible.
        "deterministic": False if on_cuda else "warn",
        "benchmark": False,
    }


def build_trainer(train: TrainConfig, *, validate_every: int | None = None, logger=None,
                  callbacks: Sequence[Callback] = (), root: str | Path | None = None, accumulate: int = 1) -> L.Trainer:
    """A Trainer for `train`; validation every `validate_every` steps (None: no validation loop).

    Checkpointing is on exactly when a ModelCheckpoint callback is given; `root` is the Trainer's
    default folder (None: the working directory, unused when nothing is logged or checkpointed).
    """
    # Lightning counts val_check_interval in batches, not optimizer steps: with accumulation, scale it
    validation = ({"limit_val_batches": 0} if validate_every is None else
                  {"val_check_interval": min(validate_every, train.max_steps) * accumulate, "check_val_every_n_epoch": None})
    return L.Trainer(**trainer_kwargs(train), **validation, accumulate_grad_batches=accumulate,
                     logger=logger if logger is not None else False,
                     callbacks=[*callbacks, training_progress()], enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                     use_distributed_sampler=False, enable_model_summary=False, default_root_dir=root)


def mlflow_logger(tracking_uri: str, run_id: str, prefix: str = ""):
    """Lightning's MLflow logger writing step metrics into an existing MLflow run, without the `epoch`
    Lightning adds to every logged batch (always 0 here: training is one endless epoch of draws)."""
    from lightning.pytorch.loggers import MLFlowLogger

    class StepMetricsLogger(MLFlowLogger):
        def log_metrics(self, metrics, step=None):
            super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

        def finalize(self, status: str = "success") -> None:
            """Leave the run's status alone: the study runner ends it once the whole point is logged. (Lightning
            marks it FINISHED when training ends, so a point killed later, in evaluation, passed for done.)"""

    return StepMetricsLogger(tracking_uri=tracking_uri, run_id=run_id, prefix=prefix)


def fit_resumable(make_module: Callable[[], L.LightningModule], data, train: TrainConfig,
                  folder: Path, *, validate_every: int | None, logger=None,
                  callbacks: Sequence[Callback] = ()) -> tuple[L.Trainer, L.LightningModule]:
    """Seed with `train.seed`, build the module (so its initialization follows the seed) and fit it,
    checkpointing every `train.checkpoint_every` steps under `folder/checkpoints` and resuming from
    the last one if a killed attempt left it; writes `folder/final.ckpt`."""
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = make_module()
    checkpoints = folder / "checkpoints"
    resume = checkpoints / "last.ckpt"
    saver = ResumeCheckpoint(validate_every, dirpath=checkpoints, every_n_train_steps=train.checkpoint_every, save_last=True, save_top_k=0)
    curve = ValidationCurve()
    trainer = build_trainer(train, validate_every=validate_every, logger=logger, callbacks=[saver, curve, *callbacks],
                            accumulate=data.accumulate)
    # resume checkpoints are this code's own, of plain containers: load them without unpickling anything else
    trainer.fit(module, datamodule=data, ckpt_path=resume if resume.exists() else None, weights_only=True)
    trainer.save_checkpoint(folder / "final.ckpt", weights_only=False)  # whole: a longer run may resume from it
    curve.write(trainer, folder)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return trainer, module


def fit_early_stopped(make_module: Callable[[], L.LightningModule], data, train: TrainConfig,
                      folder: Path, *, validate_every: int, patience: int,
                      logger=None) -> tuple[L.Trainer, L.LightningModule, float]:
    """Seed, build the module and fit it until the validation loss stops improving for `patience`
    checks; the best checkpoint becomes `folder/final.ckpt`. Returns the trainer, the module and
    the best validation loss."""
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = make_module()
    best = ModelCheckpoint(dirpath=folder / "checkpoints", filename="best", monitor="val/loss", mode="min", save_top_k=1)
    stop = EarlyStopping(monitor="val/loss", mode="min", patience=patience)
    curve = ValidationCurve()
    trainer = build_trainer(train, validate_every=validate_every, logger=logger, callbacks=[best, stop, curve],
                            accumulate=data.accumulate)
    trainer.fit(module, datamodule=data)
    curve.write(trainer, folder)
    if trainer.is_global_zero:  # the one process that writes the stage's folder
        os.replace(best.best_model_path, folder / "final.ckpt")
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return trainer, module, float(best.best_model_score)
