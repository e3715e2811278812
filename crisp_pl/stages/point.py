"""One grid point, end to end: the list of stages it passes through.

`run_point` returns the metrics and artifacts of one run; it knows nothing of studies or MLflow
parents (crisp_pl.study does that). Every stage is cached (crisp_pl.cache), so a finished point is
never recomputed and a killed one resumes at the stage it was in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from crisp_pl.cache import StageCache
from crisp_pl.config import RunConfig
from crisp_pl.costs import point_costs
from crisp_pl.coverage import coverage_flops, repetition, verdict
from crisp_pl.model.gpt import GPTConfig
from crisp_pl.model.ladder import apply_ladder, non_embedding_params
from crisp_pl.sampling import Groups, repetition_stats
from crisp_pl.selection import get_method
from crisp_pl.stages.coverage import COVERAGE_METHODS, coverage_metrics, coverage_stage, planned_repetition
from crisp_pl.stages.data import TREE_FIT, prepare, specialist_pieces, specialist_subset
from crisp_pl.stages.evaluation import eval_stage, load_metrics
from crisp_pl.stages.selection import selection_cost, selection_stage
from crisp_pl.stages.training import TrainRecord, base_stage, finetune_stage, train_stage
from crisp_pl.training.batch import planned_draws
from crisp_pl.training.trainer import ValidationCurve


@dataclass
class PointResult:
    metrics: dict[str, float]
    keys: dict[str, str]
    """Stage name -> cache key of every stage the point used."""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Artifact name -> file (the model checkpoint under `checkpoint`)."""
    curves: dict[str, Path] = field(default_factory=dict)
    """Logger prefix of each training stage ("", "base", "finetune") -> its recorded validation curve."""


def run_point(cfg: RunConfig, cache: StageCache, make_logger=None, train_callbacks=()) -> PointResult:
    """Prepare data, select, train (and fine-tune), evaluate one configuration; return its metrics.

    `make_logger(prefix)` gives the Lightning logger of a training stage: "" for pretraining,
    "finetune" for fine-tuning, "base" for a continued-pretraining base (so their step-indexed curves
    do not overwrite each other). `train_callbacks`: more Lightning callbacks of the (pre)training
    stage (a search's pruning)."""
    started = time.perf_counter()
    cfg = apply_ladder(cfg)  # a study has applied it already; a config built by hand may not have
    logger = make_logger or (lambda prefix: None)
    method = get_method(cfg.selection.method)

    prepared = prepare(cache, cfg, need_embeddings=method.needs_embeddings, need_clusters=method.needs_clusters,
                       need_validation_clusters=method.needs_validation_clusters)
    selection = selection_stage(cache, cfg, prepared)
    groups = Groups.load(selection.path)
    # before training: how often will the draw repeat windows, and (CRISP) can the pool serve this domain at all?
    planned = planned_repetition(groups, len(prepared.stores.pool), planned_draws(cfg.train, cfg.corpus.window_length))
    print(f"plan: {repetition(planned)}", flush=True)
    covered = None
    if method.name in COVERAGE_METHODS:
        level = int(groups.info.get("chosen_level", cfg.cluster.level)) % len(cfg.cluster.levels)
        covered = coverage_stage(cache, cfg, prepared, level)
        found = coverage_metrics(covered, planned)
        print(f"coverage: {verdict(found)}", flush=True)
    base = base_stage(cache, cfg, prepared, logger("base")) if cfg.base.steps else None
    # train.max_steps = 0 after a base: the base itself is the model (D′ = 0 in a split study)
    pretrained = base if cfg.train.max_steps == 0 else train_stage(cache, cfg, prepared, selection, logger(""), base,
                                                                       train_callbacks)
    model = finetune_stage(cache, cfg, prepared, pretrained, logger("finetune")) if cfg.finetune.enabled else pretrained
    evaluation = eval_stage(cache, cfg, prepared, model)

    metrics = {f"test/{k}": v for k, v in load_metrics(evaluation).items()}
    train_flops = train_hours = 0.0
    if pretrained is not base:
        trained = TrainRecord.load(pretrained)
        metrics.update(trained.metrics("train/final_"))
        train_flops, train_hours = trained.flops, trained.hours
        per_rank = trained.steps * trained.micro_batch * trained.accumulate
        metrics.update(repetition_stats(groups, per_rank, cfg.train.seed, trained.devices))
    if cfg.finetune.enabled:
        tuned = TrainRecord.load(model)
        metrics.update(tuned.metrics("finetune/"))
        train_flops, train_hours = train_flops + tuned.flops, train_hours + tuned.hours
    base_flops = base_hours = 0.0
    if base is not None:
        based = TrainRecord.load(base)
        metrics.update(based.metrics("base/"))
        base_flops, base_hours = based.flops, based.hours
    metrics.update({f"selection/{k}": float(v) for k, v in groups.info.items()})
    metrics.update({f"data/planned_{k}": v for k, v in planned.items() if not k.startswith("uncapped_")})  # selection/ has those
    if covered is not None:
        metrics.update({f"coverage/{k}": v for k, v in found.items()})
    metrics["model/non_embedding_params"] = float(non_embedding_params(GPTConfig.from_name(cfg.model.size)))  # N of scaling laws
    metrics["data/pool_windows"] = float(len(prepared.stores.pool))  # the x axes of the data-size studies
    metrics["data/specialist_windows"] = float(len(specialist_subset(len(prepared.stores.train), cfg)))
    splits = json.loads((prepared.task.path / "splits.json").read_text())
    metrics.update({f"data/{name}_documents_cut": float(split["documents_cut"])  # by corpus.max_chars_per_doc
                    for name, split in splits.items() if "documents_cut" in split})  # absent: a task stage from before the count
    spent = selection_cost(cfg, prepared, selection, groups.info)
    task_flops, task_seconds = spent.task_flops, spent.task_seconds
    if covered is not None:  # the diagnostic is task-specific work too
        pieces = specialist_pieces(prepared, specialist_subset(len(prepared.stores.train), cfg))
        task_flops += coverage_flops(len(prepared.stores.pool), len(pieces))
        task_seconds += covered.seconds
    metrics.update(point_costs(pool_flops=spent.pool_flops, pool_hours=spent.pool_seconds / 3600, selection_flops=task_flops,
                               selection_hours=task_seconds / 3600, train_flops=train_flops, train_hours=train_hours,
                               base_flops=base_flops, base_hours=base_hours))
    metrics["time/point_seconds"] = time.perf_counter() - started

    keys = dict(prepared.keys, selection=selection.key, train=pretrained.key, model=model.key, eval=evaluation.key)
    artifacts = {p.name: p for p in selection.path.iterdir() if p.suffix in (".csv", ".npy")}
    artifacts.update({p.name: p for p in evaluation.path.glob("*.json")})
    if covered is not None:
        artifacts["coverage.csv"] = covered.path / "coverage.csv"
    if prepared.tree is not None and (prepared.tree.path / TREE_FIT).is_file():  # trees from before the record have none
        artifacts[TREE_FIT] = prepared.tree.path / TREE_FIT
    trained_stages = {"base": base, "": pretrained if pretrained is not base else None, "finetune": model if model is not pretrained else None}
    curves = {prefix: stage.path / ValidationCurve.FILE for prefix, stage in trained_stages.items() if stage is not None}
    return PointResult(metrics, keys, dict(artifacts, checkpoint=model.path / "final.ckpt"), curves)
