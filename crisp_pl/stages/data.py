"""The cached stages of the data path, from raw text to cluster labels.

    corpus (+ task)  -> tokenizer  (GPT-2's, or a BPE trained on the pool's documents)
    corpus (+ task) + tokenizer -> pool   (the generalist pool's window store)
    corpus + task + tokenizer  -> task    (train / validation / test window stores)
    windows[split] -> embeddings   (SBERT, fp16 shards; resumable shard by shard; or `embed.kind`
                                    lsi, fitted on the pool by the lsi stage, or random)
    embeddings[pool] -> tree       (hierarchical k-means)
    tree + embeddings[split] -> labels   (cluster id per window at every level)

Each stage's key hashes the config it reads and its inputs' keys (crisp_pl.cache), so changing
the model or the selection method never recomputes embeddings, and changing the cluster levels
never re-embeds. Settings that cannot change an output (batch sizes, devices) are left out of keys.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from crisp_pl import seeds
from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.cluster import ClusterTree, resolve_fit
from crisp_pl.config import ConfigError, RunConfig, to_dict
from crisp_pl.corpus.tasks import iter_corpus, load_corpus, load_task_documents, split_task, unit_hash
from crisp_pl.corpus.tokenizer import BPE_MIN_FREQUENCY, Tokenizer, gpt2_tokenizer, load_tokenizer, save_tokenizer, train_bpe
from crisp_pl.corpus.windows import JoinedStores, WindowStore, build_windows
from crisp_pl.distributed import global_rank, is_worker, world_size
from crisp_pl.embed import EMB_DIM, embed_windows, load_embedder, load_embeddings, split_for_embedder
from crisp_pl.embedders import LSI, LSI_MIN_DF, random_unit_vectors
from crisp_pl.evaluate.sample import stratified_sample
from crisp_pl.sampling import MIXED_STORE

TASK_SPLITS = ("train", "validation", "test")
TRAIN_TEXTS = "train_texts.parquet"
LSI_FIT_WINDOWS = 200_000


def _without_unset_ids(sources: list[dict]) -> list[dict]:
    """Source settings as hashed: `id_field` absent while unset, so keys made before it existed hold."""
    return [{k: v for k, v in source.items() if not (k == "id_field" and v is None)} for source in sources]


def _task_inputs(cfg: RunConfig) -> dict:
    task = to_dict(cfg.task)
    task["extra_sources"] = _without_unset_ids(task["extra_sources"])
    for component in task["components"]:
        component["extra_sources"] = _without_unset_ids(component["extra_sources"])
    for key in ("name", "max_train_windows", "train_share", "domain_in_pool", "weights"):  # none changes which document goes where
        task.pop(key)
    if not task["components"]:
        task.pop("components")  # a single task: its key as before multitasks had components
    return task


def _corpus_inputs(cfg: RunConfig) -> dict:
    """The corpus config a window stage hashes; the tokenizer settings enter as the tokenizer stage's key."""
    corpus = to_dict(cfg.corpus)
    for key in ("tokenizer", "bpe_vocab_size"):
        corpus.pop(key)
    corpus["sources"] = _without_unset_ids(corpus["sources"])
    return corpus


def _pool_is_shared(cfg: RunConfig) -> tuple[set[str], bool]:
    """(held-out sources and domains, whether the pool is independent of the task's split).

    The task's own domain never joins the pool (the paper's generalist and specialist corpora are
    separate) unless `task.domain_in_pool` asks for it; corpus.holdout and the task's extra sources
    are always held out, so every task of a study that holds them all out shares one pool."""
    held = set(cfg.corpus.holdout) | {s.name for s in cfg.task.extra_sources}
    if not cfg.task.domain_in_pool:
        held |= set(cfg.task.sources)
    return held, set(cfg.task.sources) <= held


def _pool_documents(cfg: RunConfig, subsample: bool = True) -> Iterator:
    """The generalist pool's documents, in corpus order; with `subsample`, only the `corpus.pool_fraction`
    share of them. A pool shared by every task (the default) is a filter of the corpus, streamed: a pool of
    terabytes is never in memory. With `task.domain_in_pool` the domain's split decides, over the whole corpus."""
    held, shared = _pool_is_shared(cfg)
    pool = (d for d in iter_corpus(cfg.corpus) if d.source not in held and d.domain not in held) if shared else \
        iter(split_task(load_corpus(cfg.corpus), cfg.task, cfg.corpus.holdout)["pool"])
    # a fixed number per document: pool fractions are nested (the 1/8 pool is inside the 1/4 pool)
    return (d for d in pool if unit_hash("pool", d.doc_id) < cfg.corpus.pool_fraction) if subsample else pool


def _pool_inputs(cfg: RunConfig) -> dict:
    """What chooses the pool's documents (and, with the tokenizer, its windows)."""
    inputs = {"corpus": _corpus_inputs(cfg)}
    held, shared = _pool_is_shared(cfg)
    task_held = held - set(cfg.corpus.holdout) - {s.name for s in cfg.task.extra_sources}
    if task_held:  # the task's domain, held out by default: it chooses the pool's documents
        inputs["task_holdout"] = sorted(task_held)
    if not shared:
        inputs["task"] = _task_inputs(cfg)  # domain_in_pool: the part of the domain the task does not use joins the pool
    return inputs


def tokenizer_stage(cache: StageCache, cfg: RunConfig) -> CacheEntry:
    """The tokenizer every window store of a run is written with: `tokenizer.json`, its spec
    (crisp_pl.corpus.tokenizer). `gpt2` is fixed; `bpe` is trained on the generalist pool's documents
    (never a specialist test document), so its key holds what chooses them and the BPE settings."""
    if cfg.corpus.tokenizer == "gpt2":
        inputs = {"tokenizer": "gpt2"}
    else:
        inputs = {"tokenizer": "bpe", "vocab_size": cfg.corpus.bpe_vocab_size, "min_frequency": BPE_MIN_FREQUENCY,
                  **_pool_inputs(cfg)}
        for key in ("window_length", "shard_windows", "pool_fraction"):  # the whole pool's documents, not their windows
            inputs["corpus"].pop(key)

    def build(out: Path) -> None:
        if cfg.corpus.tokenizer == "gpt2":
            tokenizer = gpt2_tokenizer()
        else:
            # the whole pool, whatever corpus.pool_fraction: every pool size of a study shares one tokenizer
            tokenizer = train_bpe((d.text for d in _pool_documents(cfg, subsample=False)), cfg.corpus.bpe_vocab_size)
        save_tokenizer(tokenizer, out / "tokenizer.json")
        (out / "info.json").write_text(json.dumps({"name": tokenizer.name, "vocab_size": tokenizer.vocab_size,
                                                   "eos_id": tokenizer.eos_id}, indent=1))

    return cache.run("tokenizer", inputs, build)


def pool_stage(cache: StageCache, cfg: RunConfig, tokenizer: CacheEntry | None = None) -> CacheEntry:
    """The generalist pool's windows, written with the tokenizer stage's tokenizer (run here when not
    given). When the pool is shared (see `_pool_is_shared`), so are its embeddings and tree."""
    tokenizer = tokenizer or tokenizer_stage(cache, cfg)
    inputs = {**_pool_inputs(cfg), "tokenizer": tokenizer.key}

    def build(out: Path) -> None:
        store = build_windows(_pool_documents(cfg), out / "pool", cfg.corpus.window_length, cfg.corpus.shard_windows,
                              load_tokenizer(tokenizer.path / "tokenizer.json"))
        (out / "splits.json").write_text(json.dumps({"pool": {"documents": len(store.doc_table), "windows": len(store)}}, indent=1))

    return cache.run("pool", inputs, build)


def task_stage(cache: StageCache, cfg: RunConfig, tokenizer: CacheEntry | None = None) -> CacheEntry:
    """The specialist task's train / validation / test windows."""
    tokenizer = tokenizer or tokenizer_stage(cache, cfg)
    corpus = {k: v for k, v in _corpus_inputs(cfg).items() if k != "pool_fraction"}  # the pool's size moves no task document
    inputs = {"corpus": corpus, "task": _task_inputs(cfg), "tokenizer": tokenizer.key, "train_texts": True}

    def build(out: Path) -> None:
        splits = split_task(load_task_documents(cfg.corpus, cfg.task), cfg.task, cfg.corpus.holdout)
        out.mkdir(parents=True, exist_ok=True)
        # the specialist train documents whole, for their per-document embeddings (row i = train doc_table row i)
        pd.DataFrame({"doc_id": [d.doc_id for d in splits["train"]], "text": [d.text for d in splits["train"]]}
                     ).to_parquet(out / TRAIN_TEXTS, index=False)
        encoder = load_tokenizer(tokenizer.path / "tokenizer.json")
        summary = {}
        for name in TASK_SPLITS:
            if name == "validation" and not splits[name]:
                continue  # validation is optional (validation_fraction 0); train and test are required
            store = build_windows(splits[name], out / name, cfg.corpus.window_length, cfg.corpus.shard_windows, encoder)
            cut = [d.chars_cut for d in splits[name] if d.chars_cut]
            summary[name] = {"documents": len(splits[name]), "windows": len(store), "documents_cut": len(cut), "chars_cut": sum(cut)}
            if cut:  # the cap is meant for the pool: shortening the scarce specialist text must not pass unseen
                print(f"task {cfg.task.name}: {len(cut):,} of {len(splits[name]):,} {name} documents cut to "
                      f"corpus.max_chars_per_doc={cfg.corpus.max_chars_per_doc:,} ({sum(cut):,} chars dropped); "
                      f"raise or unset it to keep them whole", file=sys.stderr, flush=True)
        (out / "splits.json").write_text(json.dumps(summary, indent=1))

    return cache.run("task", inputs, build)


def _embed_inputs(cfg: RunConfig, *drop: str) -> dict:
    """The embed config a stage's key hashes: SBERT's settings (without `kind`, so SBERT keys predate
    the option), or just the kind for the others (LSI's fit enters as its own stage's key)."""
    if cfg.embed.kind != "sbert":
        return {"kind": cfg.embed.kind}
    embed = to_dict(cfg.embed)
    for key in ("kind", "batch_size", "device", "shard_rows", *drop):  # how the work is cut does not change a row
        embed.pop(key)
    return embed


def lsi_stage(cache: StageCache, cfg: RunConfig, pool: CacheEntry) -> CacheEntry:
    """`embed.kind: lsi`: TF-IDF + truncated SVD fitted on the pool's window texts (crisp_pl.embedders),
    at most LSI_FIT_WINDOWS of them (a seeded sample: a web-scale pool's vocabulary settles long before)."""
    def build(out: Path) -> None:
        store = WindowStore(pool.path / "pool")
        fit = np.arange(len(store)) if len(store) <= LSI_FIT_WINDOWS else \
            np.sort(seeds.rng(cfg.cluster.seed, "lsi.fit").choice(len(store), LSI_FIT_WINDOWS, replace=False))
        started = time.perf_counter()
        print(f"lsi: fitting TF-IDF + truncated SVD on {len(fit):,} pool windows (one step, no bar)", flush=True)
        LSI.fit(store.texts(fit), seed=cfg.cluster.seed).save(out)
        print(f"lsi: fitted in {time.perf_counter() - started:.0f} s", flush=True)

    inputs = {"pool": pool.key, "dim": EMB_DIM, "min_df": LSI_MIN_DF, "fit_windows": LSI_FIT_WINDOWS, "seed": cfg.cluster.seed}
    return cache.run("lsi", inputs, build)


def _encoder(cache: StageCache, cfg: RunConfig, pool: CacheEntry) -> tuple[Callable | None, dict]:
    """(encode(texts) -> embeddings, or None for SBERT; what it adds to a key)."""
    if cfg.embed.kind == "lsi":
        fitted = lsi_stage(cache, cfg, pool)
        return (lambda texts: LSI.load(fitted.path).encode(texts)), {"lsi": fitted.key}
    return (random_unit_vectors if cfg.embed.kind == "random" else None), {}


def embeddings_stage(cache: StageCache, cfg: RunConfig, windows: CacheEntry, split: str, pool: CacheEntry) -> CacheEntry:
    """The embeddings of one window store's windows (`pool`: the LSI fit of a non-SBERT kind)."""
    encode, fitted = _encoder(cache, cfg, pool)
    inputs = {"windows": windows.key, "split": split, "embed": _embed_inputs(cfg), **fitted}

    def build(out: Path) -> None:
        store = WindowStore(windows.path / split)
        embed_windows(lambda start, stop: store.texts(range(start, stop)), len(store), cfg.embed, out, cfg.embed.shard_rows,
                      encode=encode, rank=global_rank(), world=world_size())

    return cache.run("embeddings", inputs, build, collective=True)  # each rank embeds its share of the shards


def specialist_embeddings_stage(cache: StageCache, cfg: RunConfig, task: CacheEntry, pool: CacheEntry) -> CacheEntry:
    """SBERT embeddings of the specialist train documents, one row per piece: each document is cut into
    pieces of at most `embed.max_seq_length` word pieces, so N short documents (MCQ questions packed
    many to a window) give N rows of P(c|Ds), and no part of a long one goes unseen. `owner.npy` maps
    each row to its document (a row of the train store's doc_table). The pool stays embedded as windows."""
    encode, fitted = _encoder(cache, cfg, pool)
    embed = _embed_inputs(cfg, "long_window")  # pieces fit the embedder: no long-window rule applies
    if cfg.embed.kind != "sbert":  # the pieces are MiniLM's whatever the embedder, so every kind counts the same units
        embed["pieces"] = {"max_seq_length": cfg.embed.max_seq_length, "model_path": cfg.embed.model_path}
    inputs = {"task": task.key, "unit": "document_pieces", "embed": embed, **fitted}

    def build(out: Path) -> None:
        texts = pd.read_parquet(task.path / TRAIN_TEXTS)["text"].tolist()
        pieces, owner = split_for_embedder(texts, load_embedder(cfg.embed).tokenizer, cfg.embed.max_seq_length)
        embed_windows(lambda start, stop: pieces[start:stop], len(pieces), cfg.embed, out, cfg.embed.shard_rows,
                      encode=encode, rank=global_rank(), world=world_size())
        if not is_worker():
            np.save(out / "owner.npy", owner)

    return cache.run("embeddings", inputs, build, collective=True)


def specialist_pieces(prepared: "Prepared", subset: np.ndarray) -> np.ndarray:
    """Rows of the specialist piece embeddings (and labels) that belong to the train windows in use:
    all of them, or, when `specialist_subset` cuts them, the pieces of the documents those windows hold."""
    train = prepared.stores.train
    if len(subset) == len(train):
        return np.arange(len(prepared.train_piece_docs))
    return np.flatnonzero(train.documents_in(subset)[prepared.train_piece_docs])


TREE_FIT = "tree_fit.json"  # how the tree was fitted: the backend that ran, the level fit, seconds per level


def tree_stage(cache: StageCache, cfg: RunConfig, pool_embeddings: CacheEntry) -> CacheEntry:
    cluster = to_dict(cfg.cluster)
    cluster.pop("level")  # which level weights the sampling does not change the tree
    cluster["fit"] = resolve_fit(cluster["fit"])  # the fit that runs here: `auto` differs between machines
    if cluster["fit"] == "per_parent":
        cluster.pop("fit")  # trees fitted before the option keep their keys
    inputs = {"embeddings": pool_embeddings.key, "cluster": cluster}

    def build(out: Path) -> None:
        embeddings = load_embeddings(pool_embeddings.path)
        tree = ClusterTree.fit(embeddings, cfg.cluster)  # fp16 in, converted per batch
        tree.save(out / "tree.npz")
        fit = {"backend": tree.backend_, "fit": tree.fit_, "vectors": len(embeddings), "levels": list(cfg.cluster.levels),
               "level_seconds": [round(s, 3) for s in tree.fit_seconds_]}
        (out / TREE_FIT).write_text(json.dumps(fit, indent=1))
        print(f"tree: {' -> '.join(map(str, cfg.cluster.levels))} clusters over {len(embeddings):,} windows on {tree.backend_} "
              f"({tree.fit_} level fit) in {sum(tree.fit_seconds_):.1f} s", flush=True)

    return cache.run("tree", inputs, build)


def labels_stage(cache: StageCache, tree: CacheEntry, embeddings: CacheEntry) -> CacheEntry:
    def build(out: Path) -> None:
        np.save(out / "labels.npy", ClusterTree.load(tree.path / "tree.npz").assign(load_embeddings(embeddings.path)))

    return cache.run("labels", {"tree": tree.key, "embeddings": embeddings.key}, build)


def specialist_subset(n_train: int, cfg: RunConfig) -> np.ndarray:
    """Indices of the specialist train windows in use: all, or a prefix of one seeded order when
    `task.train_share` or `task.max_train_windows` cuts them (so smaller sets nest in larger ones)."""
    cap = n_train if cfg.task.max_train_windows is None else cfg.task.max_train_windows
    if cfg.task.train_share < 1:
        cap = min(cap, max(1, round(cfg.task.train_share * n_train)))
    if cap >= n_train:
        return np.arange(n_train)
    return np.sort(seeds.rng(cfg.task.seed, "specialist_subset").permutation(n_train)[:cap])


def subset_inputs(cfg: RunConfig) -> dict:
    """What chooses the specialist train windows in use, for the keys of the stages that read them."""
    share = {"train_share": cfg.task.train_share} if cfg.task.train_share != 1 else {}  # absent at 1: older keys hold
    return {"max_train_windows": cfg.task.max_train_windows, **share}


def heldout_windows(store, cap: int | None, seed: int, role: str) -> np.ndarray:
    """The windows of a held-out store an evaluation scores: all of them, or a seeded sample of `cap`
    stratified by source (a prefix would be biased: stores are in source order)."""
    return stratified_sample(store.sources, cap, seeds.rng(seed, role))


@dataclass(frozen=True)
class Stores:
    """The window stores of one run: the generalist pool and the task's splits (validation is optional)."""

    pool: WindowStore
    train: WindowStore
    validation: WindowStore | None
    test: WindowStore

    def __getitem__(self, name: str) -> WindowStore | JoinedStores | None:
        """By split name, as `Groups.store` names the store its members index (`pool+train`: the two joined,
        for a draw that mixes specialist windows into a selection)."""
        if name == MIXED_STORE:
            return JoinedStores(self.pool, self.train)
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
    tokenizer: Tokenizer | None = None
    """The tokenizer of every store (the GPT's vocabulary follows it; checkpoints carry its spec)."""
    embeddings: dict[str, CacheEntry] = field(default_factory=dict)
    """`pool` (one row per window) and `train` (one row per piece of a specialist train document) ->
    their embeddings entry, when the method needs embeddings; `validation` (one row per window) when
    it scores the validation windows."""
    train_piece_docs: np.ndarray | None = None
    """(n_pieces,) the train document (doc_table row) of each specialist embedding row."""
    tree: CacheEntry | None = None
    label_stages: tuple[CacheEntry, ...] = ()
    """(pool, train[, validation]) label entries, when the method needs clusters."""
    pool_labels: np.ndarray | None = None
    """(n_pool, levels) cluster id of every pool window at every level."""
    train_labels: np.ndarray | None = None
    """(n_pieces, levels) the same for every piece of a specialist train document."""
    validation_labels: np.ndarray | None = None
    """(n_validation_windows, levels) the cluster ids of the specialist validation windows, when asked."""


def prepare(cache: StageCache, cfg: RunConfig, need_embeddings: bool = False, need_clusters: bool = False,
            need_validation_clusters: bool = False) -> Prepared:
    """Run (or reuse) every data stage a method needs: embeddings and the tree only when it uses them,
    the validation windows' embeddings and labels only when it scores them."""
    need_clusters = need_clusters or need_validation_clusters
    tokenizer = tokenizer_stage(cache, cfg)
    pool, task = pool_stage(cache, cfg, tokenizer), task_stage(cache, cfg, tokenizer)
    encoder = load_tokenizer(tokenizer.path / "tokenizer.json")
    splits = {split: WindowStore(task.path / split, encoder) if (task.path / split).is_dir() else None for split in TASK_SPLITS}
    stores = Stores(pool=WindowStore(pool.path / "pool", encoder), **splits)
    prepared = Prepared(pool, task, stores, {"tokenizer": tokenizer.key, "pool": pool.key, "task": task.key}, tokenizer=encoder)
    if need_embeddings or need_clusters:
        prepared.embeddings = {"pool": embeddings_stage(cache, cfg, pool, "pool", pool),
                               "train": specialist_embeddings_stage(cache, cfg, task, pool)}
        prepared.train_piece_docs = np.load(prepared.embeddings["train"].path / "owner.npy")
        prepared.keys.update(pool_embeddings=prepared.embeddings["pool"].key, train_embeddings=prepared.embeddings["train"].key)
    if need_clusters:
        tree = tree_stage(cache, cfg, prepared.embeddings["pool"])
        pool_labels = labels_stage(cache, tree, prepared.embeddings["pool"])
        train_labels = labels_stage(cache, tree, prepared.embeddings["train"])
        prepared.keys.update(tree=tree.key, pool_labels=pool_labels.key, train_labels=train_labels.key)
        prepared.tree, prepared.label_stages = tree, (pool_labels, train_labels)
        prepared.pool_labels = np.load(pool_labels.path / "labels.npy")
        prepared.train_labels = np.load(train_labels.path / "labels.npy")
    if need_validation_clusters:
        if stores.validation is None:
            raise ConfigError("this method scores the specialist validation windows: set task.validation_fraction > 0")
        embedded = embeddings_stage(cache, cfg, task, "validation", pool)
        labels = labels_stage(cache, tree, embedded)
        prepared.keys.update(validation_embeddings=embedded.key, validation_labels=labels.key)
        prepared.embeddings["validation"], prepared.label_stages = embedded, (*prepared.label_stages, labels)
        prepared.validation_labels = np.load(labels.path / "labels.npy")
    return prepared
