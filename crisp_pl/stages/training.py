"""The training stages: pretraining on a selection, and fine-tuning on the specialist train windows.

Both are cached like the data path: a finished model is never retrained, and a killed pretraining
resumes from its last checkpoint, which lives in the stage's partial folder. Each writes
`final.ckpt` and `train.json` (a `TrainRecord`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import ConfigError, RunConfig, TrainConfig, to_dict
from crisp_pl.model.checkpoint import load_gpt
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.sampling import Groups
from crisp_pl.stages.data import Prepared, heldout_windows, specialist_subset, subset_inputs
from crisp_pl.training.batch import batch_plan
from crisp_pl.training.datamodule import SelectionDataModule
from crisp_pl.training.module import GPTModule
from crisp_pl.training.trainer import fit_early_stopped, fit_resumable


@dataclass(frozen=True)
class TrainRecord:
    """What a training stage did (its `train.json`)."""

    train_seconds: float
    """Wall time of the last (possibly resumed) attempt."""
    steps: int
    tokens: float
    """Predicted tokens over all ranks, carried across resumes by the checkpoint."""
    flops: float
    params: int
    devices: int
    micro_batch: int = 0
    """Windows per device per forward pass (crisp_pl.training.batch)."""
    accumulate: int = 1
    """Micro batches per optimizer step."""
    best_val_loss: float | None = None
    """Fine-tuning: the validation loss of the kept (best) checkpoint."""

    @classmethod
    def load(cls, entry: CacheEntry) -> "TrainRecord":
        return cls(**json.loads((entry.path / "train.json").read_text()))

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in dataclasses.asdict(self).items() if v is not None}


def _record(out: Path, trainer, module, started: float, **extra: float) -> None:
    record = TrainRecord(train_seconds=time.perf_counter() - started, steps=trainer.global_step,
                         tokens=float(module.tokens_seen), flops=module.flops_seen, params=module.gpt.num_params(),
                         devices=trainer.world_size, micro_batch=trainer.datamodule.batch_size,
                         accumulate=trainer.accumulate_grad_batches, **extra)
    (out / "train.json").write_text(json.dumps({k: v for k, v in dataclasses.asdict(record).items() if v is not None}, indent=1))


def _datamodule(cfg: RunConfig, prepared: Prepared, groups: Groups, train: TrainConfig) -> SelectionDataModule:
    validation = prepared.stores.validation
    if validation is not None:  # every run validates on the same seeded, source-stratified windows
        validation = validation.subset(heldout_windows(validation, cfg.eval.max_windows, cfg.task.seed, "eval.validation_windows"))
    plan = batch_plan(train, cfg.corpus.window_length)  # the same tokens per step on any number of devices
    return SelectionDataModule(prepared.stores[groups.store], groups, batch_size=plan.micro_batch, max_steps=train.max_steps,
                               seed=train.seed, val_store=validation, val_batch_size=cfg.eval.batch_size,
                               num_workers=train.num_workers, accumulate=plan.accumulate)


def _validate_every(prepared: Prepared, every: int) -> int | None:
    return None if prepared.stores.validation is None else every


def train_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, selection: CacheEntry, logger=None) -> CacheEntry:
    """Pretrain a fresh GPT on windows drawn from the selection's groups."""
    train = to_dict(cfg.train)
    # `ladder` is in the settings it derived (run_point applies it first)
    for key in ("checkpoint_every", "log_every", "num_workers", "val_every", "ladder"):
        train.pop(key)
    inputs = {"selection": selection.key, "model": to_dict(cfg.model), "window_length": cfg.corpus.window_length, "train": train}

    def build(out: Path) -> None:
        started = time.perf_counter()
        gpt_config = GPTConfig.from_name(cfg.model.size, block_size=cfg.corpus.window_length, dropout=cfg.model.dropout,
                                         vocab_size=padded_vocab_size(prepared.tokenizer.vocab_size))  # the tokenizer's ids
        data = _datamodule(cfg, prepared, Groups.load(selection.path), cfg.train)
        spec = prepared.tokenizer.spec()  # every checkpoint carries its tokenizer
        trainer, module = fit_resumable(lambda: GPTModule(GPT(gpt_config), cfg.train, spec), data, cfg.train, out,
                                        validate_every=_validate_every(prepared, cfg.train.val_every), logger=logger)
        _record(out, trainer, module, started)

    return cache.run("train", inputs, build)


def finetune_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, pretrained: CacheEntry, logger=None) -> CacheEntry:
    """Continue training the pretrained model on the specialist train windows; early stopping on the
    specialist validation loss keeps the best checkpoint (`final.ckpt`)."""
    ft = cfg.finetune
    if prepared.stores.validation is None:
        raise ConfigError("finetune.enabled needs specialist validation windows (task.validation_fraction > 0) for early stopping")
    train = dataclasses.replace(cfg.train, lr=ft.lr, max_steps=ft.max_steps, warmup_steps=ft.warmup_steps)
    subset = specialist_subset(len(prepared.stores.train), cfg)
    inputs = {"pretrained": pretrained.key, "task": prepared.keys["task"], **subset_inputs(cfg),
              "finetune": to_dict(ft), "eval_windows": cfg.eval.max_windows, "eval_sample": "stratified"}

    def build(out: Path) -> None:
        started = time.perf_counter()
        groups = Groups.of("train", subset)
        trainer, module, best = fit_early_stopped(lambda: GPTModule(load_gpt(pretrained.path / "final.ckpt").train(), train,
                                                                    prepared.tokenizer.spec()),
                                                  _datamodule(cfg, prepared, groups, train), train, out,
                                                  validate_every=ft.val_every, patience=ft.patience, logger=logger)
        _record(out, trainer, module, started, best_val_loss=best)

    return cache.run("finetune", inputs, build)
