"""`crisp study plan NAME`: what running a study would reuse and compute, before anything runs.

For each point, the stages are walked in the order `run_point` takes them, against a cache that
answers from the finished outputs and never builds: every stage found is reused; the first one
missing is where computing starts, and every stage after it must be computed too (its key hashes
the missing one's). Points already finished in MLflow are marked done.

The estimate counts training FLOPs from the config (the GPT's own count per token, built on the meta
device: 6N + 12·layers·width·length, N the parameters but the position embedding, times the tokens of base, training and the fine-tuning's upper bound) and
turns them into hours at the rate the cache's finished training stages reached on this machine (their
FLOPs over their seconds), or prints no hours when nothing has trained yet. Selection costs (SBERT,
k-means, auxiliary LMs) are left out: they are shared, and small beside training at the paper's scales.

The task-independent stages (the tokenizer, the pool's windows, embeddings, tree and labels: what
`cost/pool_*` counts) are listed once for the study, by key, with the points that read each: one
pool's stages are built once and shared by every point (and every study) with that pool.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import RunConfig, stable_hash
from crisp_pl.corpus.tokenizer import VOCAB_SIZE as GPT2_VOCAB
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.training.batch import batch_plan, world_size


class _WouldBuild(Exception):
    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class _LookupOnly(StageCache):
    """The cache, read only: a missing stage raises instead of building."""

    def __init__(self, root):
        super().__init__(root)
        self.reused: list[str] = []

    def run(self, stage, inputs, build, collective: bool = False) -> CacheEntry:
        entry = self.lookup(stage, inputs)
        if entry is None:
            raise _WouldBuild(stage)
        self.reused.append(stage)
        return entry


class _KeysOnly(StageCache):
    """Answers every stage with its key and folder, built or not, and builds nothing: the keys of a chain
    of stages whose inputs are configs and upstream keys follow from the config alone."""

    def run(self, stage, inputs, build, collective: bool = False) -> CacheEntry:
        key = stable_hash(inputs)
        return CacheEntry(stage, key, self.path(stage, key))


def pool_stages(cfg: RunConfig, cache_root) -> list[tuple[str, CacheEntry]]:
    """The task-independent stages a point reads, built or not: the tokenizer and the pool's windows for
    every method, the pool's embeddings for a method that embeds, its tree and labels for one that clusters."""
    from crisp_pl.selection import get_method
    from crisp_pl.stages.data import embeddings_stage, labels_stage, pool_stage, tokenizer_stage, tree_stage

    cache, method = _KeysOnly(cache_root), get_method(cfg.selection.method)
    tokenizer = tokenizer_stage(cache, cfg)
    pool = pool_stage(cache, cfg, tokenizer)
    stages = [("tokenizer", tokenizer), ("pool", pool)]
    if method.needs_embeddings or method.needs_clusters:
        embedded = embeddings_stage(cache, cfg, pool, "pool", pool)
        stages.append(("pool embeddings", embedded))
        if method.needs_clusters:
            tree = tree_stage(cache, cfg, embedded)
            stages += [("tree", tree), ("pool labels", labels_stage(cache, tree, embedded))]
    return stages


@dataclass
class PointPlan:
    name: str
    done: bool
    reused: list[str]
    computes_from: str | None
    """The first stage to compute (every later one follows); None: every stage is cached."""
    train_flops: float


def training_flops(cfg: RunConfig) -> float:
    """FLOPs of the point's base, training and fine-tuning (its max_steps), from the config alone."""
    import torch

    vocab = cfg.corpus.bpe_vocab_size if cfg.corpus.tokenizer == "bpe" else GPT2_VOCAB
    shape = GPTConfig.from_name(cfg.model.size, block_size=cfg.corpus.window_length, vocab_size=padded_vocab_size(vocab))
    with torch.device("meta"):  # the shapes without the memory: a 1.3B model is counted in milliseconds
        gpt = GPT(shape)
    length = cfg.corpus.window_length - 1  # tokens predicted per window
    per_token = gpt.flops_per_token(length)
    plan = batch_plan(cfg.train, cfg.corpus.window_length)
    tokens_per_step = plan.micro_batch * plan.accumulate * world_size(cfg.train) * length
    steps = cfg.base.steps + cfg.train.max_steps + (cfg.finetune.max_steps if cfg.finetune.enabled else 0)
    return per_token * tokens_per_step * steps


def plan_point(name: str, cfg: RunConfig, cache_root, done: bool) -> PointPlan:
    from crisp_pl.stages import run_point

    cache = _LookupOnly(cache_root)
    try:
        run_point(cfg, cache)
        missing = None
    except _WouldBuild as stop:
        missing = stop.stage
    return PointPlan(name, done, list(dict.fromkeys(cache.reused)), missing, training_flops(cfg))


def flops_per_second(cache: StageCache) -> float | None:
    """The median training throughput of the cache's finished training stages (None: none yet)."""
    from crisp_pl.stages import TrainRecord

    rates = []
    for stage in ("train", "stable", "base", "finetune"):
        for entry, _ in cache.finished(stage):
            record = TrainRecord.load(entry)
            if record.train_seconds > 0 and record.flops > 0:
                rates.append(record.flops / (record.train_seconds * record.devices))
    return statistics.median(rates) if rates else None
