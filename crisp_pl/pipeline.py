"""One grid point, end to end: data stages -> selection -> training -> evaluation.

`run_point` returns the metrics and artifacts of one run; it knows nothing of studies or MLflow
parents (crisp_pl.study does that). Training and evaluation are cached stages like the data path:
a finished point is never retrained, and a killed training resumes from its last checkpoint,
which lives in the train stage's partial folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crisp_pl.cache import Stage, StageCache
from crisp_pl.config import RunConfig, to_dict
from crisp_pl.selection import Groups, Histogram, crisp_groups
from crisp_pl.stages import Prepared, prepare


@dataclass
class PointResult:
    metrics: dict[str, float]
    keys: dict[str, str]
    histogram: Histogram | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)


def specialist_subset(n_train: int, cfg: RunConfig) -> np.ndarray:
    """Indices of the specialist train windows in use (a seeded subset when capped)."""
    cap = cfg.task.max_train_windows
    if cap is None or cap >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng([cfg.task.seed, 1]).permutation(n_train)[:cap])


def select(cfg: RunConfig, prepared: Prepared) -> tuple[Groups, Histogram | None]:
    """Turn the prepared data into weighted groups, by `selection.method`."""
    method = cfg.selection.method
    subset = specialist_subset(len(prepared.stores["train"]), cfg)
    if method == "uniform":
        return Groups.single("pool", len(prepared.stores["pool"])), None
    if method == "specialist":
        return Groups("train", np.array([0, len(subset)]), subset, np.array([1.0])), None
    level = cfg.cluster.level
    num_clusters = cfg.cluster.levels[level]
    return crisp_groups(prepared.pool_labels[:, level], prepared.train_labels[subset, level], num_clusters, cfg.selection.smoothing)


def selection_inputs(cfg: RunConfig, prepared: Prepared) -> dict:
    """What a selection depends on: the part of the train stage's key that differs by method."""
    inputs = {"method": cfg.selection.method, "windows": prepared.windows.key, "max_train_windows": cfg.task.max_train_windows}
    if cfg.selection.method == "crisp":
        inputs.update(tree=prepared.keys["tree"], level=cfg.cluster.level, smoothing=cfg.selection.smoothing)
    return inputs


def train_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, groups: Groups, logger=None) -> Stage:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from crisp_pl.data import SelectionDataModule
    from crisp_pl.model.gpt import GPT, GPTConfig
    from crisp_pl.model.module import GPTModule, trainer_kwargs

    train = to_dict(cfg.train)
    for key in ("checkpoint_every", "log_every", "num_workers", "val_every"):
        train.pop(key)
    inputs = {"selection": selection_inputs(cfg, prepared), "model": to_dict(cfg.model),
              "window_length": cfg.corpus.window_length, "train": train}

    def build(out: Path) -> None:
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        gpt_config = GPTConfig.from_name(cfg.model.size, block_size=cfg.corpus.window_length, dropout=cfg.model.dropout)
        module = GPTModule(GPT(gpt_config), cfg.train)
        data = SelectionDataModule(prepared.stores[groups.store], groups, batch_size=cfg.train.batch_size, max_steps=cfg.train.max_steps,
                                   seed=cfg.train.seed, val_store=prepared.stores["validation"],
                                   val_batch_size=cfg.eval.batch_size, val_windows=cfg.eval.max_windows,
                                   num_workers=cfg.train.num_workers)
        checkpoints = out / "checkpoints"
        resume = checkpoints / "last.ckpt"
        trainer = L.Trainer(**trainer_kwargs(cfg.train), logger=logger if logger is not None else False,
                            use_distributed_sampler=False, enable_model_summary=False,
                            val_check_interval=min(cfg.train.val_every, cfg.train.max_steps), check_val_every_n_epoch=None,
                            limit_val_batches=0 if prepared.stores["validation"] is None else None,
                            callbacks=[ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=cfg.train.checkpoint_every,
                                                       save_last=True, save_top_k=0)])
        started = time.perf_counter()
        trainer.fit(module, datamodule=data, ckpt_path=resume if resume.exists() else None)
        trainer.save_checkpoint(out / "final.ckpt")
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out / "train.json").write_text(json.dumps({
            "train_seconds": time.perf_counter() - started,  # of the last (possibly resumed) attempt
            "steps": trainer.global_step,
            "tokens": float(module.tokens_seen),  # all ranks, carried across resumes by the checkpoint
            "flops": module.flops_seen,
            "params": module.gpt.num_params(),
            "devices": trainer.world_size,
        }, indent=1))

    return cache.run("train", inputs, build)


def eval_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, train: Stage) -> Stage:
    from crisp_pl.evaluate.perplexity import perplexity
    from crisp_pl.model.module import load_gpt

    inputs = {"train": train.key, "windows": prepared.windows.key, "max_windows": cfg.eval.max_windows}

    def build(out: Path) -> None:
        gpt = load_gpt(train.path / "final.ckpt")
        result = perplexity(gpt, prepared.stores["test"], cfg.eval.batch_size, cfg.eval.max_windows, desc=f"test/{cfg.task.name}")
        (out / "metrics.json").write_text(json.dumps(result, indent=1))

    return cache.run("eval", inputs, build)


def run_point(cfg: RunConfig, cache: StageCache, logger=None) -> PointResult:
    """Prepare data, select, train and evaluate one configuration; return its metrics."""
    started = time.perf_counter()
    prepared = prepare(cache, cfg, need_clusters=cfg.selection.method == "crisp")
    groups, hist = select(cfg, prepared)
    train = train_stage(cache, cfg, prepared, groups, logger)
    evaluation = eval_stage(cache, cfg, prepared, train)

    from crisp_pl.data import repetition_stats

    task = cfg.task.name
    test = json.loads((evaluation.path / "metrics.json").read_text())
    trained = json.loads((train.path / "train.json").read_text())
    metrics = {f"test/{task}/{k}": v for k, v in test.items()}
    metrics.update({f"train/final_{k}": float(v) for k, v in trained.items()})
    metrics.update({f"selection/{k}": float(v) for k, v in groups.info.items()})
    metrics.update(repetition_stats(groups, cfg.train.max_steps * cfg.train.batch_size, cfg.train.seed, int(trained["devices"])))
    metrics["time/point_seconds"] = time.perf_counter() - started
    keys = dict(prepared.keys, train=train.key, eval=evaluation.key)
    return PointResult(metrics, keys, hist, {"checkpoint": train.path / "final.ckpt"})
