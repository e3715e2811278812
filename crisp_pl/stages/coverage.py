"""The coverage stage: how well the pool can serve the specialist set (crisp_pl.coverage), before training.

Run for the CRISP methods at the level their selection uses, cached under the keys of the data it
reads, so every seed and fine-tuning variant of a point shares one. The folder holds
`coverage.json` (the metrics) and `coverage.csv` (one row per specialist piece and per sampled pool
window: its nearest-pool and centroid cosines), drawn beside the histogram by `crisp figures`.
The repetition depends on the training budget, so it is planned per point (`planned_repetition`), for
every method, and added to the diagnostic's metrics (`coverage_metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crisp_pl import seeds
from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.cluster import ClusterTree
from crisp_pl.config import RunConfig
from crisp_pl.coverage import coverage
from crisp_pl.embed import load_embeddings
from crisp_pl.repetition import expected_repetition, max_draws_per_window
from crisp_pl.sampling import Groups
from crisp_pl.selection.registry import mixture_settings
from crisp_pl.stages.data import Prepared, specialist_pieces, specialist_subset, subset_inputs
from crisp_pl.stages.selection import piece_mixture_weights

COVERAGE_METHODS = ("crisp", "crisp_auto")


def coverage_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, level: int) -> CacheEntry:
    """The diagnostic at tree `level` for the specialist train pieces in use (`prepared` with clusters)."""
    inputs = {"pool_embeddings": prepared.keys["pool_embeddings"], "train_embeddings": prepared.keys["train_embeddings"],
              "tree": prepared.keys["tree"], "level": level, "task_seed": cfg.task.seed, **subset_inputs(cfg),
              **mixture_settings(cfg)}

    def build(out: Path) -> None:
        pieces = specialist_pieces(prepared, specialist_subset(len(prepared.stores.train), cfg))
        weights = (piece_mixture_weights(cfg, prepared.stores.train.doc_table, prepared.train_piece_docs[pieces])
                   if cfg.task.components else None)
        found = coverage(load_embeddings(prepared.embeddings["pool"].path), load_embeddings(prepared.embeddings["train"].path)[pieces],
                         prepared.pool_labels[:, level], prepared.train_labels[pieces, level],
                         ClusterTree.load(prepared.tree.path / "tree.npz").centroids[level],
                         seeds.rng(cfg.task.seed, "coverage.sample"), weights)
        (out / "coverage.json").write_text(json.dumps(found.metrics, indent=1))
        found.rows.to_csv(out / "coverage.csv", index=False)

    return cache.run("coverage", inputs, build)


def planned_repetition(groups: Groups, pool_windows: int, draws: int) -> dict[str, float]:
    """Before training: how often the selection's `draws` repeat windows (both stores of a mix), against
    uniform over the pool, and what a cap changed (crisp_pl.repetition; keys read by crisp_pl.coverage.repetition)."""
    planned = {"expected_repetition": expected_repetition(groups.sizes, groups.weights, draws),
               "uniform_repetition": expected_repetition(np.array([pool_windows]), np.array([1.0]), draws),
               "max_draws_per_window": max_draws_per_window(groups.sizes, groups.weights, draws)}
    planned.update({k: float(groups.info[k]) for k in ("uncapped_expected_repetition", "uncapped_max_draws_per_window")
                    if k in groups.info})
    return planned


def coverage_metrics(entry: CacheEntry, planned: dict[str, float]) -> dict[str, float]:
    """The stage's metrics plus the point's planned repetition."""
    return {**json.loads((entry.path / "coverage.json").read_text()), **planned}
