"""One grid point, end to end: data stages -> selection -> training [-> fine-tuning] -> evaluation.

`run_point` returns the metrics and artifacts of one run; it knows nothing of studies or MLflow
parents (crisp_pl.study does that). Selection, training, fine-tuning and evaluation are cached
stages like the data path: a finished point is never retrained, and a killed pretraining resumes
from its last checkpoint, which lives in the train stage's partial folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crisp_pl.cache import Stage, StageCache
from crisp_pl.config import ConfigError, RunConfig, to_dict
from crisp_pl.selection import Groups
from crisp_pl.selection.stage import NEEDS_CLUSTERS, NEEDS_EMBEDDINGS, selection_stage, specialist_subset
from crisp_pl.stages import Prepared, prepare


@dataclass
class PointResult:
    metrics: dict[str, float]
    keys: dict[str, str]
    artifacts: dict[str, Path] = field(default_factory=dict)  # artifact name -> file


def _trainer(cfg: RunConfig, prepared: Prepared, train, logger, callbacks, val_every: int):
    import lightning as L

    from crisp_pl.model.module import trainer_kwargs

    return L.Trainer(**trainer_kwargs(train), logger=logger if logger is not None else False,
                     use_distributed_sampler=False, enable_model_summary=False,
                     val_check_interval=min(val_every, train.max_steps), check_val_every_n_epoch=None,
                     limit_val_batches=0 if prepared.stores["validation"] is None else None, callbacks=callbacks)


def _datamodule(cfg: RunConfig, prepared: Prepared, groups: Groups, train):
    from crisp_pl.data import SelectionDataModule

    return SelectionDataModule(prepared.stores[groups.store], groups, batch_size=train.batch_size, max_steps=train.max_steps,
                               seed=train.seed, val_store=prepared.stores["validation"], val_batch_size=cfg.eval.batch_size,
                               val_windows=cfg.eval.max_windows, num_workers=train.num_workers)


def _record(out: Path, trainer, module, started: float, **extra: float) -> None:
    (out / "train.json").write_text(json.dumps({
        "train_seconds": time.perf_counter() - started,  # of the last (possibly resumed) attempt
        "steps": trainer.global_step,
        "tokens": float(module.tokens_seen),  # all ranks, carried across resumes by the checkpoint
        "flops": module.flops_seen,
        "params": module.gpt.num_params(),
        "devices": trainer.world_size,
        **extra,
    }, indent=1))


def train_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, selection: Stage, logger=None) -> Stage:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from crisp_pl.model.gpt import GPT, GPTConfig
    from crisp_pl.model.module import GPTModule

    train = to_dict(cfg.train)
    for key in ("checkpoint_every", "log_every", "num_workers", "val_every"):
        train.pop(key)
    inputs = {"selection": selection.key, "model": to_dict(cfg.model), "window_length": cfg.corpus.window_length, "train": train}

    def build(out: Path) -> None:
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        gpt_config = GPTConfig.from_name(cfg.model.size, block_size=cfg.corpus.window_length, dropout=cfg.model.dropout)
        module = GPTModule(GPT(gpt_config), cfg.train)
        checkpoints = out / "checkpoints"
        resume = checkpoints / "last.ckpt"
        callbacks = [ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=cfg.train.checkpoint_every, save_last=True, save_top_k=0)]
        trainer = _trainer(cfg, prepared, cfg.train, logger, callbacks, cfg.train.val_every)
        started = time.perf_counter()
        trainer.fit(module, datamodule=_datamodule(cfg, prepared, Groups.load(selection.path), cfg.train),
                    ckpt_path=resume if resume.exists() else None)
        trainer.save_checkpoint(out / "final.ckpt")
        shutil.rmtree(checkpoints, ignore_errors=True)
        _record(out, trainer, module, started)

    return cache.run("train", inputs, build)


def finetune_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, pretrained: Stage, logger=None) -> Stage:
    """Continue training the pretrained model on the specialist train windows; early stopping on the
    specialist validation loss keeps the best checkpoint (`final.ckpt`)."""
    import dataclasses

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from crisp_pl.model.module import GPTModule, load_gpt

    ft = cfg.finetune
    if prepared.stores["validation"] is None:
        raise ConfigError("finetune.enabled needs specialist validation windows (task.validation_fraction > 0) for early stopping")
    train = dataclasses.replace(cfg.train, lr=ft.lr, max_steps=ft.max_steps, warmup_steps=ft.warmup_steps)
    subset = specialist_subset(len(prepared.stores["train"]), cfg)
    inputs = {"pretrained": pretrained.key, "task": prepared.keys["task"], "max_train_windows": cfg.task.max_train_windows,
              "finetune": to_dict(ft), "eval_windows": cfg.eval.max_windows}

    def build(out: Path) -> None:
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        module = GPTModule(load_gpt(pretrained.path / "final.ckpt").train(), train)
        best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/loss", mode="min", save_top_k=1)
        stop = EarlyStopping(monitor="val/loss", mode="min", patience=ft.patience)
        trainer = _trainer(cfg, prepared, train, logger, [best, stop], ft.val_every)
        started = time.perf_counter()
        groups = Groups("train", np.array([0, len(subset)]), subset, np.array([1.0]))
        trainer.fit(module, datamodule=_datamodule(cfg, prepared, groups, train))
        os.replace(best.best_model_path, out / "final.ckpt")
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        _record(out, trainer, module, started, best_val_loss=float(best.best_model_score))

    return cache.run("finetune", inputs, build)


def eval_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, model: Stage) -> Stage:
    """Perplexity on the held-out specialist test windows, and MCQ accuracy through lm-eval on the
    test-half questions of any multiple-choice set in the task."""
    from crisp_pl.evaluate.perplexity import perplexity
    from crisp_pl.model.module import load_gpt

    inputs = {"model": model.key, "task": prepared.keys["task"], "max_windows": cfg.eval.max_windows,
              "max_questions": cfg.eval.max_questions}

    def build(out: Path) -> None:
        gpt = load_gpt(model.path / "final.ckpt")
        test = prepared.stores["test"]
        metrics = {f"{cfg.task.name}/{k}": v for k, v in
                   perplexity(gpt, test, cfg.eval.batch_size, cfg.eval.max_windows, desc=f"test/{cfg.task.name}").items()}
        metrics.update(_mcq_accuracy(gpt, test, cfg, out / "lm_eval"))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    return cache.run("eval", inputs, build)


def _mcq_accuracy(gpt, test, cfg: RunConfig, folder: Path) -> dict[str, float]:
    """acc / acc_norm per MCQ set among the test documents (none for a pure language-modeling task)."""
    from crisp_pl.corpus.builtin import MCQ_SOURCES

    sets = [name for name in MCQ_SOURCES if name in set(test.doc_table["source"])]
    if not sets:
        return {}
    from crisp_pl.corpus.mcq import load_questions
    from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate
    from crisp_pl.evaluate.mcq import write_tasks

    test_ids = set(test.doc_table["doc_id"])
    by_task = {f"{name}_test_half": [q for q in load_questions(name) if q.doc_id in test_ids][: cfg.eval.max_questions] for name in sets}
    write_tasks(by_task, folder)
    results = evaluate(CrispLM.from_gpt(gpt, batch_size=cfg.eval.batch_size), list(by_task), include_path=folder)
    return {f"{task.removesuffix('_test_half')}/{k}": float(v) for task, scores in results.items() for k, v in scores.items()}


def selection_cost(cfg: RunConfig, prepared: Prepared, selection: Stage, info: dict) -> tuple[float, float]:
    """(FLOPs, seconds) of the data stages the method uses and of the selection itself."""
    from crisp_pl.costs import embedding_flops, kmeans_flops

    method = cfg.selection.method
    flops, stages = float(info.get("aux_flops", 0.0)), [selection]
    if method in NEEDS_EMBEDDINGS:
        chunks = 1.0 if cfg.embed.long_window == "truncate" else 5.0  # mean_chunks: ~5 chunks per 1024-token window
        flops += embedding_flops(len(prepared.stores["pool"]) + len(prepared.stores["train"]), cfg.embed, chunks)
        stages += prepared.embeddings.values()
    if method in NEEDS_CLUSTERS:
        flops += kmeans_flops(len(prepared.stores["pool"]), cfg.cluster)
        stages += [prepared.tree, *prepared.label_stages]
    return flops, sum(stage.seconds for stage in stages)


def run_point(cfg: RunConfig, cache: StageCache, make_logger=None) -> PointResult:
    """Prepare data, select, train (and fine-tune), evaluate one configuration; return its metrics.

    `make_logger(prefix)` gives the Lightning logger of a training stage: "" for pretraining,
    "finetune" for fine-tuning (so its step-indexed curves do not overwrite pretraining's)."""
    from crisp_pl.costs import point_costs
    from crisp_pl.data import repetition_stats

    started = time.perf_counter()
    method = cfg.selection.method
    prepared = prepare(cache, cfg, need_embeddings=method in NEEDS_EMBEDDINGS, need_clusters=method in NEEDS_CLUSTERS)
    selection = selection_stage(cache, cfg, prepared)
    groups = Groups.load(selection.path)
    logger = make_logger or (lambda prefix: None)
    train = train_stage(cache, cfg, prepared, selection, logger(""))
    model = finetune_stage(cache, cfg, prepared, train, logger("finetune")) if cfg.finetune.enabled else train
    evaluation = eval_stage(cache, cfg, prepared, model)

    trained = json.loads((train.path / "train.json").read_text())
    metrics = {f"test/{k}": v for k, v in json.loads((evaluation.path / "metrics.json").read_text()).items()}
    metrics.update({f"train/final_{k}": float(v) for k, v in trained.items()})
    train_flops, train_seconds = trained["flops"], trained["train_seconds"]
    if model is not train:
        tuned = json.loads((model.path / "train.json").read_text())
        metrics.update({f"finetune/{k}": float(v) for k, v in tuned.items()})
        train_flops, train_seconds = train_flops + tuned["flops"], train_seconds + tuned["train_seconds"]
    metrics.update({f"selection/{k}": float(v) for k, v in groups.info.items()})
    metrics.update(repetition_stats(groups, cfg.train.max_steps * cfg.train.batch_size, cfg.train.seed, int(trained["devices"])))
    selection_flops, selection_seconds = selection_cost(cfg, prepared, selection, groups.info)
    metrics.update(point_costs(selection_flops=selection_flops, selection_seconds=selection_seconds, train_flops=train_flops,
                               train_seconds=train_seconds, train_devices=int(trained["devices"])))
    metrics["time/point_seconds"] = time.perf_counter() - started
    keys = dict(prepared.keys, selection=selection.key, train=train.key, model=model.key, eval=evaluation.key)
    artifacts = {p.name: p for p in selection.path.iterdir() if p.suffix in (".csv", ".npy")}
    artifacts.update({p.name: p for p in evaluation.path.glob("*.json")})
    return PointResult(metrics, keys, dict(artifacts, checkpoint=model.path / "final.ckpt"))
