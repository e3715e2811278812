"""The selection stage: one registered method's groups, computed once and cached like every data stage.

The method comes from the registry (crisp_pl.selection); this stage builds its `SelectionContext`
from the data stages it declared it needs, runs `select(ctx)`, and saves the result. The key hashes
the method's name, the keys of the data it reads and the settings it declared, nothing else.

The stage folder holds `groups.npz` + `groups.json` (the Groups, its info with the method's own
cost: `aux_flops`, `aux_seconds`) and the method's artifacts: `histogram.csv` (CRISP),
`scores.npy` (one score per pool window, for the filters) or `doge_weights.npy` (DoGE's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import RunConfig
from crisp_pl.costs import embedding_flops, kmeans_flops
from crisp_pl.embed import load_embeddings
from crisp_pl.sampling import mix
from crisp_pl.selection import Method, SelectionContext, get_method
from crisp_pl.stages.data import Prepared, specialist_pieces, specialist_subset, subset_inputs


def selection_inputs(cfg: RunConfig, prepared: Prepared, method: Method) -> dict:
    """What a method's groups depend on: its name and settings, and the keys of the data it reads."""
    inputs = {"method": method.name, "pool": prepared.keys["pool"], **method.settings(cfg)}
    if method.targeted or cfg.selection.mix.specialist:
        inputs.update(task=prepared.keys["task"], **subset_inputs(cfg))
    if cfg.selection.mix.specialist:  # absent without a mix: keys made before it existed still hold
        inputs["mix_specialist"] = cfg.selection.mix.specialist
    if method.needs_embeddings:
        inputs.update(pool_embeddings=prepared.keys["pool_embeddings"], train_embeddings=prepared.keys["train_embeddings"])
    if method.needs_clusters:
        inputs["tree"] = prepared.keys["tree"]
    if method.needs_validation_clusters:
        inputs["validation_labels"] = prepared.keys["validation_labels"]
    return inputs


def selection_context(cfg: RunConfig, prepared: Prepared, method: Method, work_dir: Path) -> SelectionContext:
    stores = prepared.stores
    subset = specialist_subset(len(stores.train), cfg)
    ctx = SelectionContext(cfg, stores.pool, stores.train.subset(subset), subset, stores.validation, work_dir)
    if method.needs_embeddings:  # the specialist side is embedded per document piece, not per window
        pieces = specialist_pieces(prepared, subset)
        ctx.pool_embeddings = load_embeddings(prepared.embeddings["pool"].path)
        ctx.specialist_embeddings = load_embeddings(prepared.embeddings["train"].path)[pieces]
        if cfg.task.components:
            ctx.specialist_weights = piece_mixture_weights(cfg, stores.train.doc_table, prepared.train_piece_docs[pieces])
    if method.needs_clusters:
        ctx.pool_labels, ctx.specialist_labels = prepared.pool_labels, prepared.train_labels[pieces]
    ctx.validation_labels = prepared.validation_labels
    return ctx


def piece_mixture_weights(cfg: RunConfig, doc_table, piece_docs: np.ndarray) -> np.ndarray:
    """(P,) a multitask's weight per specialist piece: component t's pieces share its mixture weight
    (task.weights) equally, so P(c|Ds) mixes the tasks' histograms, not their piece counts."""
    component = cfg.task.component_index(doc_table["source"].to_numpy()[piece_docs], doc_table["domain"].to_numpy()[piece_docs])
    counts = np.bincount(component, minlength=len(cfg.task.components))
    return cfg.task.mixture_weights()[component] / counts[component]


def selection_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared) -> CacheEntry:
    method = get_method(cfg.selection.method)

    def build(out: Path) -> None:
        ctx = selection_context(cfg, prepared, method, out / "work")
        groups = method.select(ctx)
        if cfg.selection.mix.specialist:
            groups = mix(groups, ctx.specialist_indices, cfg.selection.mix.specialist, len(ctx.pool))
        groups.save(out)
        for name, value in ctx.artifacts.items():
            if name.endswith(".csv"):
                value.to_csv(out / name, index=False)
            else:
                np.save(out / name, value)

    return cache.run("selection", selection_inputs(cfg, prepared, method), build)


@dataclass(frozen=True)
class SelectionCost:
    """What the data a method read and its selection cost, split as the paper counts it (crisp_pl.costs)."""

    pool_flops: float = 0.0
    """Task-independent: the pool's embedding, the tree fit and the pool's assignment."""
    pool_seconds: float = 0.0
    task_flops: float = 0.0
    """Task-specific: the specialist (and validation) embeddings and labels, the selection with its auxiliary models."""
    task_seconds: float = 0.0


def selection_cost(cfg: RunConfig, prepared: Prepared, selection: CacheEntry, info: dict) -> SelectionCost:
    """The FLOPs and seconds of the data stages the method uses and of the selection itself."""
    method = get_method(cfg.selection.method)
    pool_flops, task_flops = 0.0, float(info.get("aux_flops", 0.0))
    pool_stages, task_stages = [], [selection]
    if method.needs_embeddings:
        chunks = 1.0 if cfg.embed.long_window == "truncate" else 5.0  # mean_chunks: ~5 chunks per 1024-token window
        pool_flops += embedding_flops(len(prepared.stores.pool), cfg.embed, chunks)
        task_flops += embedding_flops(len(prepared.train_piece_docs), cfg.embed)  # one row per specialist piece
        if "validation" in prepared.embeddings:
            task_flops += embedding_flops(len(prepared.stores.validation), cfg.embed, chunks)
        pool_stages.append(prepared.embeddings["pool"])
        task_stages += [entry for name, entry in prepared.embeddings.items() if name != "pool"]
    if method.needs_clusters:
        pool_flops += kmeans_flops(len(prepared.stores.pool), cfg.cluster)
        pool_labels, *task_labels = prepared.label_stages
        pool_stages += [prepared.tree, pool_labels]
        task_stages += task_labels
    return SelectionCost(pool_flops, sum(stage.seconds for stage in pool_stages),
                         task_flops, sum(stage.seconds for stage in task_stages))
