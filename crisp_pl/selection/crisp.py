"""CRISP: clustered importance sampling (Grangier et al., ICLR 2025, Algorithm 1).

P(c|Ds) is the histogram of the specialist train documents over the clusters of one tree level,
one count per document piece (crisp_pl.stages.data.specialist_embeddings_stage: a short document is
one piece, a long one one piece per `embed.max_seq_length` word pieces); P(c|Dg) is the histogram
of the generalist pool's windows. Training samples a cluster from P(c|Ds), then a
generalist window uniformly inside it, which gives each generalist window of cluster c the
importance weight w(c) = P(c|Ds) / P(c|Dg) relative to uniform sampling.

A multitask weighs each piece so that its components enter P(c|Ds) in `task.weights` (equal by
default), whatever their sizes (crisp_pl.stages.selection.piece_mixture_weights).

Specialist mass on a cluster that holds no generalist window cannot be sampled (there is nothing
to draw); it is dropped and the rest renormalized. The dropped share is reported as
`selection/dropped_mass` so a tree too fine for its pool is visible rather than silent.

With `selection.crisp.max_repeats: R` the distribution drawn is planned against the budget: the one
closest to P(c|Ds) in KL under which no pool window is drawn more than R times in expectation at the
point's planned pool draws (crisp_pl.repetition.cap_weights). The histogram's `p_drawn` column is
that distribution; the selection logs what the cap moved and the repetition without it.

`crisp_auto` chooses the tree level from the specialist data alone, by how well each level's
histogram predicts the specialist validation windows (`level_scores`; with a cap, the capped
histogram's), and logs the choice and every level's score (`selection/chosen_level`,
`selection/level_score_L`, `level_scores.csv`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from crisp_pl.config import RunConfig
from crisp_pl.repetition import cap_weights
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.registry import mixture_settings, register
from crisp_pl.training.batch import planned_draws


@dataclass
class Histogram:
    """Cluster histograms at one level and the importance weights derived from them."""

    generalist_counts: np.ndarray  # (C,) generalist windows per cluster
    specialist_counts: np.ndarray  # (C,) specialist document pieces per cluster
    p_specialist: np.ndarray  # (C,) P(c|Ds) after drop + smoothing: what is drawn, unless capped
    dropped_mass: float  # specialist mass on clusters without generalist windows

    @property
    def p_generalist(self) -> np.ndarray:
        return self.generalist_counts / self.generalist_counts.sum()

    @property
    def importance_weights(self) -> np.ndarray:
        """w(c) = P(c|Ds) / P(c|Dg); zero where the cluster has no generalist window."""
        pg = self.p_generalist
        return np.divide(self.p_specialist, pg, out=np.zeros_like(pg), where=pg > 0)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({
            "cluster": np.arange(len(self.generalist_counts)),
            "generalist_windows": self.generalist_counts,
            "specialist_pieces": self.specialist_counts,
            "p_generalist": self.p_generalist,
            "p_specialist": self.p_specialist,
            "importance_weight": self.importance_weights,
        })


def histogram(pool_labels: np.ndarray, specialist_labels: np.ndarray, num_clusters: int, smoothing: float = 0.0,
              specialist_weights: np.ndarray | None = None) -> Histogram:
    """Build P(c|Ds) over clusters that can be sampled.

    `smoothing` adds that many pseudo-counts (in units of the mean piece weight) to every cluster
    holding generalist windows (Laplace smoothing), which keeps some mass on clusters the small
    specialist set missed. `specialist_weights` weighs each piece (a multitask's mixture); None: one each.
    """
    g = np.bincount(pool_labels, minlength=num_clusters).astype(np.float64)
    counts = np.bincount(specialist_labels, minlength=num_clusters).astype(np.float64)
    s = counts if specialist_weights is None else \
        np.bincount(specialist_labels, specialist_weights, minlength=num_clusters) * len(specialist_labels) / np.sum(specialist_weights)
    if s.sum() == 0:
        raise ValueError("the specialist set has no windows to build a histogram from")
    reachable = g > 0
    dropped = s[~reachable].sum() / s.sum()
    kept = np.where(reachable, s + smoothing, 0.0)
    if kept.sum() == 0:
        raise ValueError("no specialist window falls in a cluster that holds generalist windows")
    return Histogram(g, counts, kept / kept.sum(), float(dropped))


def crisp_groups(pool_labels: np.ndarray, specialist_labels: np.ndarray, num_clusters: int, smoothing: float = 0.0,
                 specialist_weights: np.ndarray | None = None) -> tuple[Groups, Histogram]:
    """Groups = clusters of the pool, weighted by the specialist histogram."""
    hist = histogram(pool_labels, specialist_labels, num_clusters, smoothing, specialist_weights)
    info = {
        "dropped_mass": hist.dropped_mass,
        "clusters": num_clusters,
        "clusters_sampled": int((hist.p_specialist > 0).sum()),
        "specialist_clusters": int((hist.specialist_counts > 0).sum()),
    }
    return Groups.from_labels("pool", pool_labels, hist.p_specialist, info), hist


def pool_draws(cfg: RunConfig) -> int:
    """Pool windows the point's (pre)training draws: its planned draws less the specialist mix's share."""
    return round(planned_draws(cfg.train, cfg.corpus.window_length) * (1.0 - cfg.selection.mix.specialist))


def cap_settings(cfg: RunConfig) -> dict:
    """The cap's part of a CRISP key: nothing without a cap, so uncapped keys are as they were."""
    max_repeats = cfg.selection.crisp.max_repeats
    return {} if max_repeats is None else {"max_repeats": max_repeats, "pool_draws": pool_draws(cfg)}


def cap_groups(groups: Groups, cfg: RunConfig) -> Groups:
    """`groups` reweighted under `selection.crisp.max_repeats` at the point's pool draws (unchanged without a cap)."""
    max_repeats = cfg.selection.crisp.max_repeats
    if max_repeats is None:
        return groups
    draws = pool_draws(cfg)
    capped = cap_weights(groups.weights, groups.sizes, draws, max_repeats)
    if capped.infeasible:
        print(f"selection.crisp.max_repeats={max_repeats:g}: {draws:,} draws from {int(groups.sizes.sum()):,} pool windows "
              f"repeat each more than that even drawn uniformly; drawing uniformly over the pool", flush=True)
    info = {**groups.info, **capped.info(groups.weights, groups.sizes, draws, max_repeats),
            "clusters_sampled": int((capped.weights > 0).sum())}
    return Groups(groups.store, groups.offsets, groups.members, capped.weights, info)


def _crisp_at(ctx: SelectionContext, level: int) -> Groups:
    """CRISP's groups at tree `level`, capped if the config says so (its histogram saved as an artifact)."""
    groups, hist = crisp_groups(ctx.pool_labels[:, level], ctx.specialist_labels[:, level],
                                ctx.cfg.cluster.levels[level], ctx.cfg.selection.smoothing, ctx.specialist_weights)
    groups = cap_groups(groups, ctx.cfg)
    table = hist.table()
    if ctx.cfg.selection.crisp.max_repeats is not None:
        table["p_drawn"] = groups.weights
    ctx.artifacts["histogram.csv"] = table
    return groups


@register("crisp", needs={"clusters"},
          settings=lambda cfg: {"level": cfg.cluster.level, "smoothing": cfg.selection.smoothing, **mixture_settings(cfg),
                                **cap_settings(cfg)})
def select(ctx: SelectionContext) -> Groups:
    """Pool clusters of one tree level weighted by the specialist histogram P(c|Ds)."""
    return _crisp_at(ctx, ctx.cfg.cluster.level)


LEVEL_SCORE_SMOOTHING = 1.0  # add-one: a validation window in a cluster no train piece reached still has a finite score


def level_scores(pool_labels: np.ndarray, specialist_labels: np.ndarray, validation_labels: np.ndarray,
                 levels: list[int], specialist_weights: np.ndarray | None = None,
                 cap: tuple[int, float] | None = None, smoothing: float = 0.0) -> np.ndarray:
    """(levels,) the held-out score of each tree level, from the specialist data alone: the mean over the
    specialist validation windows of log w(c) = log P(c|Ds) / P(c|Dg), P(c|Ds) the add-one smoothed
    histogram of the train pieces at that level.

    That is the held-out log-likelihood ratio, against the pool, of the density that CRISP's sampling
    puts on the embedding space (P(c|Ds) spread over cluster c in proportion to the pool), so levels
    with different numbers of clusters compare on one scale: a coarse level cannot tell the domain
    from its neighbours, a fine one spreads the scarce train pieces too thin to predict where
    validation windows fall. A validation window in a cluster with no pool window (an empty k-means
    cluster) scores the level's lowest weight.

    `cap` = (pool draws, max repeats) scores the histogram the budget lets training draw
    (crisp_pl.repetition.cap_weights) instead: a level whose mass sits on clusters too small for the
    budget loses the part of its likelihood that only repetition could buy. The cap applies to the
    histogram training draws (unsmoothed, `smoothing`) and the add-one pseudo-counts go on after it:
    capping the smoothed histogram would miss the cap at fine levels, where the pseudo-counts of many
    clusters outweigh the few train pieces and spread the mass below any cap."""
    scores = []
    for level, k in enumerate(levels):
        hist = histogram(pool_labels[:, level], specialist_labels[:, level], k,
                         LEVEL_SCORE_SMOOTHING if cap is None else smoothing, specialist_weights)
        if cap is not None:
            drawn = cap_weights(hist.p_specialist, hist.generalist_counts, *cap).weights
            pieces = len(specialist_labels) * (1.0 - hist.dropped_mass)  # the drawn histogram's mass in piece units
            smoothed = np.where(hist.generalist_counts > 0, drawn * pieces + LEVEL_SCORE_SMOOTHING, 0.0)
            hist = replace(hist, p_specialist=smoothed / smoothed.sum())
        w = hist.importance_weights
        floor = w[w > 0].min()
        scores.append(float(np.mean(np.log(np.maximum(w[validation_labels[:, level]], floor)))))
    return np.array(scores)


@register("crisp_auto", needs={"validation_clusters"},
          settings=lambda cfg: {"levels": cfg.cluster.levels, "smoothing": cfg.selection.smoothing, **mixture_settings(cfg),
                                **cap_settings(cfg),
                                # the capped score caps the drawn histogram since 2026-12-07 (a key apart from the old one's)
                                **({"capped_score": "drawn"} if cfg.selection.crisp.max_repeats is not None else {})})
def select_level(ctx: SelectionContext) -> Groups:
    """CRISP at the tree level whose histogram best predicts the specialist validation windows (see `level_scores`)."""
    levels, cap = ctx.cfg.cluster.levels, cap_settings(ctx.cfg)
    scores = level_scores(ctx.pool_labels, ctx.specialist_labels, ctx.validation_labels, levels, ctx.specialist_weights,
                          (cap["pool_draws"], cap["max_repeats"]) if cap else None, ctx.cfg.selection.smoothing)
    level = int(np.argmax(scores))
    groups = _crisp_at(ctx, level)
    groups.info.update({"chosen_level": level, **{f"level_score_{i}": s for i, s in enumerate(scores)}})
    ctx.artifacts["level_scores.csv"] = pd.DataFrame({"level": range(len(levels)), "clusters": levels, "score": scores,
                                                      "chosen": [i == level for i in range(len(levels))]})
    return groups
