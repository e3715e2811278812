"""The cached stages of the data path, from raw text to cluster labels.

    corpus + task  -> windows      (pool / train / validation / test window stores)
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

from crisp_pl.cache import Stage, StageCache
from crisp_pl.config import RunConfig, to_dict

SPLITS = ("pool", "train", "validation", "test")


def windows_stage(cache: StageCache, cfg: RunConfig) -> Stage:
    from crisp_pl.corpus.tasks import load_corpus, split_task
    from crisp_pl.corpus.windows import build_windows

    task = to_dict(cfg.task)
    task.pop("max_train_windows")  # applied at selection time: changing it must not re-embed the pool
    inputs = {"corpus": to_dict(cfg.corpus), "task": task, "tokenizer": "gpt2"}

    def build(out: Path) -> None:
        splits = split_task(load_corpus(cfg.corpus), cfg.task)
        summary = {}
        for name in SPLITS:
            if name == "validation" and not splits[name]:
                continue  # validation is optional (validation_fraction 0); every other split is required
            store = build_windows(splits[name], out / name, cfg.corpus.window_length, cfg.corpus.shard_windows)
            summary[name] = {"documents": len(splits[name]), "windows": len(store)}
        (out / "splits.json").write_text(json.dumps(summary, indent=1))

    return cache.run("windows", inputs, build)


def embeddings_stage(cache: StageCache, cfg: RunConfig, windows: Stage, split: str) -> Stage:
    from crisp_pl.corpus.windows import WindowStore
    from crisp_pl.embed import embed_windows

    embed = to_dict(cfg.embed)
    for key in ("batch_size", "device"):
        embed.pop(key)
    inputs = {"windows": windows.key, "split": split, "embed": embed}

    def build(out: Path) -> None:
        store = WindowStore(windows.path / split)
        embed_windows(lambda start, stop: store.texts(range(start, stop)), len(store), cfg.embed, out)

    return cache.run("embeddings", inputs, build)


def tree_stage(cache: StageCache, cfg: RunConfig, pool_embeddings: Stage) -> Stage:
    from crisp_pl.cluster import ClusterTree
    from crisp_pl.embed import load_embeddings

    cluster = to_dict(cfg.cluster)
    cluster.pop("level")  # which level weights the sampling does not change the tree
    inputs = {"embeddings": pool_embeddings.key, "cluster": cluster}

    def build(out: Path) -> None:
        ClusterTree.fit(load_embeddings(pool_embeddings.path), cfg.cluster).save(out / "tree.npz")  # fp16 in, converted per batch

    return cache.run("tree", inputs, build)


def labels_stage(cache: StageCache, tree: Stage, embeddings: Stage) -> Stage:
    from crisp_pl.cluster import ClusterTree
    from crisp_pl.embed import load_embeddings

    def build(out: Path) -> None:
        np.save(out / "labels.npy", ClusterTree.load(tree.path / "tree.npz").assign(load_embeddings(embeddings.path)))

    return cache.run("labels", {"tree": tree.key, "embeddings": embeddings.key}, build)


@dataclass
class Prepared:
    """What a training run needs from the data path, with the keys that produced it."""

    windows: Stage
    stores: dict
    keys: dict[str, str] = field(default_factory=dict)
    pool_labels: np.ndarray | None = None  # (n_pool, levels)
    train_labels: np.ndarray | None = None  # (n_train, levels)


def prepare(cache: StageCache, cfg: RunConfig, need_clusters: bool) -> Prepared:
    """Run (or reuse) every data stage a method needs; embeddings only when it clusters."""
    from crisp_pl.corpus.windows import WindowStore

    windows = windows_stage(cache, cfg)
    stores = {split: WindowStore(windows.path / split) if (windows.path / split).is_dir() else None for split in SPLITS}
    prepared = Prepared(windows, stores, {"windows": windows.key})
    if need_clusters:
        pool_emb = embeddings_stage(cache, cfg, windows, "pool")
        train_emb = embeddings_stage(cache, cfg, windows, "train")
        tree = tree_stage(cache, cfg, pool_emb)
        pool_labels = labels_stage(cache, tree, pool_emb)
        train_labels = labels_stage(cache, tree, train_emb)
        prepared.keys.update(pool_embeddings=pool_emb.key, train_embeddings=train_emb.key, tree=tree.key,
                             pool_labels=pool_labels.key, train_labels=train_labels.key)
        prepared.pool_labels = np.load(pool_labels.path / "labels.npy")
        prepared.train_labels = np.load(train_labels.path / "labels.npy")
    return prepared
