"""The training stages: pretraining on a selection, fine-tuning on the specialist train windows, and
the base model of continued pretraining.

All are cached like the data path: a finished model is never retrained, and a killed run resumes
from its last checkpoint, which lives in the stage's partial folder. Each writes `final.ckpt` and
`train.json` (a `TrainRecord`).

Continued pretraining (`base.steps > 0`, the Optimal Splitting recipe) trains in two phases:

    base      D steps of uniform pool draws (no task data: one base serves every task and method);
              with the `wsd` schedule it is a `stable` run (constant lr) plus its own short decay
    train     D′ steps on the point's selection, from the base's weights, with a fresh optimizer,
              a re-warm and its own schedule

A `stable` run of S steps starts from the longest finished stable run of the same settings that is
shorter: the lr before the decay and the draw stream do not depend on where a run ends, so bases
at D1 < D2 < D3 cost one stable run to D3's start of decay plus three short decays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import ConfigError, RunConfig, TrainConfig, stable_hash, to_dict
from crisp_pl.distributed import is_worker
from crisp_pl.model.checkpoint import load_gpt
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.sampling import MIXED_STORE, Groups
from crisp_pl.stages.data import Prepared, heldout_windows, specialist_subset, subset_inputs
from crisp_pl.training.batch import batch_plan
from crisp_pl.training.datamodule import SelectionDataModule
from crisp_pl.training.module import GPTModule
from crisp_pl.training.schedule import stable_steps
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
    start_step: int | None = None
    """A stable phase or base: the step of the shorter run it continued (those steps were not recomputed)."""

    @classmethod
    def load(cls, entry: CacheEntry) -> "TrainRecord":
        return cls(**json.loads((entry.path / "train.json").read_text()))

    @property
    def hours(self) -> float:
        """Device-hours: wall time on every device."""
        return self.train_seconds * self.devices / 3600

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in dataclasses.asdict(self).items() if v is not None}


def _record(out: Path, trainer, module, started: float, continued: TrainRecord | None = None, **extra: float) -> None:
    """`continued`: the record of the shorter run this one went on from, whose time counts in this one's
    (a base records what it cost from scratch) and whose steps are its `start_step`."""
    before, start = (continued.train_seconds, continued.steps) if continued else (0.0, None)
    record = TrainRecord(train_seconds=before + time.perf_counter() - started, start_step=start, steps=trainer.global_step,
                         tokens=float(module.tokens_seen), flops=module.flops_seen, params=module.gpt.num_params(),
                         devices=trainer.world_size, micro_batch=trainer.datamodule.batch_size,
                         accumulate=trainer.accumulate_grad_batches, **extra)
    if trainer.is_global_zero:  # in a DDP run the other ranks trained the same model: rank 0 records it
        (out / "train.json").write_text(json.dumps({k: v for k, v in dataclasses.asdict(record).items() if v is not None}, indent=1))


def validation_windows(cfg: RunConfig, prepared: Prepared):
    """The specialist validation windows every run validates on (None without any): a seeded,
    source-stratified sample of at most `eval.max_windows`, the same for every method and seed."""
    validation = prepared.stores.validation
    if validation is None:
        return None
    return validation.subset(heldout_windows(validation, cfg.eval.max_windows, cfg.task.seed, "eval.validation_windows"))


def _datamodule(cfg: RunConfig, prepared: Prepared, groups: Groups, train: TrainConfig, validate: bool = True) -> SelectionDataModule:
    validation = validation_windows(cfg, prepared) if validate else None
    plan = batch_plan(train, cfg.corpus.window_length)  # the same tokens per step on any number of devices
    return SelectionDataModule(prepared.stores[groups.store], groups, batch_size=plan.micro_batch, max_steps=train.max_steps,
                               seed=train.seed, val_store=validation, val_batch_size=cfg.eval.batch_size,
                               num_workers=train.num_workers, accumulate=plan.accumulate)


def _validate_every(prepared: Prepared, every: int) -> int | None:
    return None if prepared.stores.validation is None else every


def _train_inputs(train: TrainConfig) -> dict:
    """The training settings a model depends on (not logging, checkpointing or loader settings; `ladder`
    is in the settings it derived, as run_point applies it first)."""
    inputs = to_dict(train)
    for key in ("checkpoint_every", "log_every", "num_workers", "val_every", "ladder"):
        inputs.pop(key)
    if train.schedule == "cosine":  # absent at the default: keys made before schedules existed still hold
        inputs.pop("schedule"), inputs.pop("decay_fraction")
    return inputs


def _gpt_config(cfg: RunConfig, prepared: Prepared) -> GPTConfig:
    return GPTConfig.from_name(cfg.model.size, block_size=cfg.corpus.window_length, dropout=cfg.model.dropout,
                               vocab_size=padded_vocab_size(prepared.tokenizer.vocab_size))  # the tokenizer's ids


def draw_inputs(groups: Groups, prepared: Prepared) -> dict:
    """What a model is trained on: a selection's groups (windows and weights) and the stores they index,
    not the settings that planned them, so two selections that plan the same draws (capped CRISP where no
    cap binds) train one model."""
    stores = {"pool": ["pool"], "train": ["task"], MIXED_STORE: ["pool", "task"]}[groups.store]
    return {"groups": groups.digest(), **{store: prepared.keys[store] for store in stores}}


def train_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, selection: CacheEntry, logger=None,
                base: CacheEntry | None = None, callbacks=()) -> CacheEntry:
    """Train a GPT on windows drawn from the selection's groups: a fresh one, or the `base` model's
    weights continued (with a fresh optimizer and `train`'s re-warm and schedule). `callbacks`: more
    Lightning callbacks (a search's pruning)."""
    groups = Groups.load(selection.path)  # read once: the key hashes it, the build draws from it
    inputs = {"draws": draw_inputs(groups, prepared), "model": to_dict(cfg.model), "window_length": cfg.corpus.window_length,
              "train": _train_inputs(cfg.train)}
    if base is not None:
        inputs["base"] = base.key

    def build(out: Path) -> None:
        started = time.perf_counter()
        gpt = (lambda: load_gpt(base.path / "final.ckpt").train()) if base is not None else (lambda: GPT(_gpt_config(cfg, prepared)))
        data = _datamodule(cfg, prepared, groups, cfg.train)
        spec = prepared.tokenizer.spec()  # every checkpoint carries its tokenizer
        trainer, module = fit_resumable(lambda: GPTModule(gpt(), cfg.train, spec), data, cfg.train, out,
                                        validate_every=_validate_every(prepared, cfg.train.val_every), logger=logger,
                                        callbacks=callbacks)
        _record(out, trainer, module, started)

    return cache.run("train", inputs, build, collective=True)


def base_train_config(cfg: RunConfig) -> TrainConfig:
    """The base's training settings: `train`'s batch and optimizer with `base`'s length, lr and schedule."""
    base = cfg.base
    return dataclasses.replace(cfg.train, max_steps=base.steps, lr=cfg.train.lr if base.lr is None else base.lr,
                               warmup_steps=cfg.train.warmup_steps if base.warmup_steps is None else base.warmup_steps,
                               schedule=base.schedule, decay_fraction=base.decay_fraction)


def base_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, logger=None) -> CacheEntry:
    """The base of continued pretraining: a fresh GPT trained `base.steps` steps on uniform pool draws,
    without validation (it reads nothing of the task, so every task on the pool shares it)."""
    train = base_train_config(cfg)
    stem = {"pool": prepared.keys["pool"], "model": to_dict(cfg.model), "window_length": cfg.corpus.window_length}

    def build(out: Path) -> None:
        started, continued = time.perf_counter(), None
        stable = stable_steps(train.max_steps, train.decay_fraction) if train.schedule == "wsd" else 0
        if stable > 0:
            phase = _stable_stage(cache, cfg, prepared, dataclasses.replace(train, schedule="constant", max_steps=stable), stem)
            continued = _continue_from(phase, out)
        _fit_on_pool(cfg, prepared, train, out, logger, started, continued)

    return cache.run("base", dict(stem, train=_train_inputs(train)), build, collective=True)


def _stable_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, train: TrainConfig, stem: dict) -> CacheEntry:
    """The stable phase of a `wsd` base: `train.max_steps` steps at constant lr after the warmup,
    continued from the longest finished stable phase of the same settings that is shorter."""
    run = dict(stem, train=_train_inputs(dataclasses.replace(train, max_steps=0)))  # every length of this run

    def build(out: Path) -> None:
        started, continued = time.perf_counter(), None
        shorter = [(inputs["steps"], entry) for entry, inputs in cache.finished("stable")
                   if stable_hash(inputs["run"]) == stable_hash(run) and inputs["steps"] < train.max_steps]
        if shorter:
            continued = _continue_from(max(shorter, key=lambda item: item[0])[1], out)
        _fit_on_pool(cfg, prepared, train, out, None, started, continued)

    return cache.run("stable", {"run": run, "steps": train.max_steps}, build, collective=True)


def _continue_from(entry: CacheEntry, out: Path) -> TrainRecord:
    """Make `entry`'s final checkpoint (weights, optimizer, step) the one `fit_resumable` resumes from,
    unless a killed attempt of this stage has already gone further; returns `entry`'s record."""
    resume = out / "checkpoints" / "last.ckpt"
    if is_worker():  # rank 0 copies it; every rank resumes from it
        while not resume.exists():
            time.sleep(0.05)
    elif not resume.exists():
        resume.parent.mkdir(parents=True, exist_ok=True)
        partial = resume.with_suffix(".copy")
        shutil.copyfile(entry.path / "final.ckpt", partial)
        os.replace(partial, resume)
    return TrainRecord.load(entry)


def _fit_on_pool(cfg: RunConfig, prepared: Prepared, train: TrainConfig, out: Path, logger, started: float,
                 continued: TrainRecord | None = None) -> None:
    """Train a fresh GPT (or resume `out`'s checkpoint) on uniform pool draws, without validation."""
    data = _datamodule(cfg, prepared, Groups.single("pool", len(prepared.stores.pool)), train, validate=False)
    gpt_config, spec = _gpt_config(cfg, prepared), prepared.tokenizer.spec()
    trainer, module = fit_resumable(lambda: GPTModule(GPT(gpt_config), train, spec), data, train, out,
                                    validate_every=None, logger=logger)
    _record(out, trainer, module, started, continued)


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

    return cache.run("finetune", inputs, build, collective=True)
