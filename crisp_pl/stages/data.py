"""The cached stages of the data path, from raw text to cluster labels.

    corpus (+ task)  -> pool       (the generalist pool's window store)
    corpus + task  -> task         (train / validation / test window stores)
    windows[split] -> embeddings   (SBERT, fp16 shards; resumable shard by shard)
    embeddings[pool] -> tree       (hierarchical k-means)
    tree + embeddings[split] -> labels   (cluster id per window at every level)

Each stage's key hashes the config it reads and its inputs' keys (crisp_pl.cache), so changing
the model or the selection method never recomputes embeddings, and changing the cluster levels
never re-embeds. Settings that cannot change an output (batch sizes, devices) are left out of keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crisp_pl import seeds
from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.cluster import ClusterTree
from crisp_pl.config import RunConfig, to_dict
from crisp_pl.corpus.tasks import load_corpus, load_task_documents, split_task
from crisp_pl.corpus.windows import WindowStore, build_windows
from crisp_pl.embed import embed_windows, load_embeddings

TASK_SPLITS = ("train", "validation", "test")


def _task_inputs(cfg: RunConfig) -> dict:
    task = to_dict(cfg.task)
    for key in ("name", "max_train_windows"):  # neither changes which document goes where
        task.pop(key)
    return task


def pool_stage(cache: StageCache, cfg: RunConfig) -> CacheEntry:
    """The generalist pool's windows. When the task's domain is held out (corpus.holdout, or the task's
    own extra sources), the pool does not depend on the task, and every task of a study shares it
    (and its embeddings and tree)."""
    held = set(cfg.corpus.holdout) | {s.name for s in cfg.task.extra_sources}
    shared = set(cfg.task.sources) <= held
    inputs = {"corpus": to_dict(cfg.corpus), "tokenizer": "gpt2"}
    if not shared:
        inputs["task"] = _task_inputs(cfg)  # the part of the domain the task does not use joins the pool

    def build(out: Path) -> None:
        docs = load_corpus(cfg.corpus)
        if shared:
            pool = [d for d in docs if d.source not in held and d.domain not in held]
        else:
            pool = split_task(docs, cfg.task, cfg.corpus.holdout)["pool"]
        store = build_windows(pool, out / "pool", cfg.corpus.window_length, cfg.corpus.shard_windows)
        (out / "splits.json").write_text(json.dumps({"pool": {"documents": len(pool), "windows": len(store)}}, indent=1))

    return cache.run("pool", inputs, build)


def task_stage(cache: StageCache, cfg: RunConfig) -> CacheEntry:
    """The specialist task's train / validation / test windows."""
    inputs = {"corpus": to_dict(cfg.corpus), "task": _task_inputs(cfg), "tokenizer": "gpt2"}

    def build(out: Path) -> None:
        splits = split_task(load_task_documents(cfg.corpus, cfg.task), cfg.task, cfg.corpus.holdout)
        summary = {}
        for name in TASK_SPLITS:
            if name == "validation" and not splits[name]:
                continue  # validation is optional (validation_fraction 0); train and test are required
            store = build_windows(splits[name], out / name, cfg.corpus.window_length, cfg.corpus.shard_windows)
            summary[name] = {"documents": len(splits[name]), "windows": len(store)}
        (out / "splits.json").write_text(json.dumps(summary, indent=1))

    return cache.run("task", inputs, build)


def embeddings_stage(cache: StageCache, cfg: RunConfig, windows: CacheEntry, split: str) -> CacheEntry:
    embed = to_dict(cfg.embed)
    for key in ("batch_size", "device"):
        embed.pop(key)
    inputs = {"windows": windows.key, "split": split, "embed": embed}

    def build(out: Path) -> None:
        store = WindowStore(windows.path / split)
        embed_windows(lambda start, stop: store.texts(range(start, stop)), len(store), cfg.embed, out)

    return cache.run("embeddings", inputs, build)


def tree_stage(cache: StageCache, cfg: RunConfig, pool_embeddings: CacheEntry) -> CacheEntry:
    cluster = to_dict(cfg.cluster)
    cluster.pop("level")  # which level weights the sampling does not change the tree
    inputs = {"embeddings": pool_embeddings.key, "cluster": cluster}

    def build(out: Path) -> None:
        ClusterTree.fit(load_embeddings(pool_embeddings.path), cfg.cluster).save(out / "tree.npz")  # fp16 in, converted per batch

    return cache.run("tree", inputs, build)


def labels_stage(cache: StageCache, tree: CacheEntry, embeddings: CacheEntry) -> CacheEntry:
    def build(out: Path) -> None:
        np.save(out / "labels.npy", ClusterTree.load(tree.path / "tree.npz").assign(load_embeddings(embeddings.path)))

    return cache.run("labels", {"tree": tree.key, "embeddings": embeddings.key}, build)


def specialist_subset(n_train: int, cfg: RunConfig) -> np.ndarray:
    """Indices of the specialist train windows in use (a seeded subset when `task.max_train_windows` caps them)."""
    cap = cfg.task.max_train_windows
    if cap is None or cap >= n_train:
        return np.arange(n_train)
    return np.sort(seeds.rng(cfg.task.seed, "specialist_subset").permutation(n_train)[:cap])


@dataclass(frozen=True)
class Stores:
    """The window stores of one run: the generalist pool and the task's splits (validation is optional)."""

    pool: WindowStore
    train: WindowStore
    validation: WindowStore | None
    test: WindowStore

    def __getitem__(self, name: str) -> WindowStore | None:
        """By split name, as `Groups.store` names the store its members index."""
        if name not in ("pool", *TASK_SPLITS):
            raise KeyError(name)
        return getattr(self, name)


@dataclass
class Prepared:
    """What a training run needs from the data path, with the keys that produced it."""

    pool: CacheEntry
    task: CacheEntry
    stores: Stores
    keys: dict[str, str] = field(default_factory=dict)
    """Data stage name -> cache key, for the stages this run used (logged as tags, hashed downstream)."""
    embeddings: dict[str, CacheEntry] = field(default_factory=dict)
    """`pool` and `train` -> their embeddings entry, when the method needs embeddings."""
    tree: CacheEntry | None = None
    label_stages: tuple[CacheEntry, ...] = ()
    """(pool, train) label entries, when the method needs clusters."""
    pool_labels: np.ndarray | None = None
    """(n_pool, levels) cluster id of every pool window at every level."""
    train_labels: np.ndarray | None = None
    """(n_train, levels) the same for every specialist train window."""


def prepare(cache: StageCache, cfg: RunConfig, need_embeddings: bool = False, need_clusters: bool = False) -> Prepared:
    """Run (or reuse) every data stage a method needs: embeddings and the tree only when it uses them."""
    pool, task = pool_stage(cache, cfg), task_stage(cache, cfg)
    splits = {split: WindowStore(task.path / split) if (task.path / split).is_dir() else None for split in TASK_SPLITS}
    stores = Stores(pool=WindowStore(pool.path / "pool"), **splits)
    prepared = Prepared(pool, task, stores, {"pool": pool.key, "task": task.key})
    if need_embeddings or need_clusters:
        prepared.embeddings = {"pool": embeddings_stage(cache, cfg, pool, "pool"), "train": embeddings_stage(cache, cfg, task, "train")}
        prepared.keys.update(pool_embeddings=prepared.embeddings["pool"].key, train_embeddings=prepared.embeddings["train"].key)
    if need_clusters:
        tree = tree_stage(cache, cfg, prepared.embeddings["pool"])
        pool_labels = labels_stage(cache, tree, prepared.embeddings["pool"])
        train_labels = labels_stage(cache, tree, prepared.embeddings["train"])
        prepared.keys.update(tree=tree.key, pool_labels=pool_labels.key, train_labels=train_labels.key)
        prepared.tree, prepared.label_stages = tree, (pool_labels, train_labels)
        prepared.pool_labels = np.load(pool_labels.path / "labels.npy")
        prepared.train_labels = np.load(train_labels.path / "labels.npy")
    return prepared
