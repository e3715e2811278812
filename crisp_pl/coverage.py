"""How well can the generalist pool serve a specialist set? The coverage diagnostic, computed before training.

CRISP can only resample the pool: when nothing in the pool resembles the specialist text, its
histogram lands in a few catch-all clusters of generic text and CRISP degrades towards uniform.
The figures, all in the embedding space CRISP clusters (SBERT by default):

- `specialist_nearest`: for each specialist piece (the units P(c|Ds) counts), the cosine to its
  nearest pool window; `pool_nearest`: the same for a sample of pool windows (nearest *other*
  window), the yardstick of how close text of one kind sits in this pool. `nearest_ratio` is the
  ratio of their medians.
- `specialist_centroid` / `pool_centroid`: the cosine of a row to the centroid of its cluster at
  the selection's level (how well its cluster describes it).
- `general_specialist_mass`: the share of P(c|Ds) in the `GENERAL_CLUSTERS` largest clusters of the
  pool (the catch-all clusters of generic text), beside `general_pool_mass`, their share of the pool.
- `effective_clusters`: exp of the entropy of P(c|Ds): how many clusters the domain really spreads over.
- the repetition planned at the point's budget (crisp_pl.stages.coverage.planned_repetition, read by
  `repetition`): `expected_repetition`, draws per distinct drawn window, against `uniform_repetition`,
  the pool's; `max_draws_per_window`, the most expected draws of one window; and, under a cap
  (`selection.crisp.max_repeats`), both again without it (`uncapped_*`).

The verdict (`verdict`) reads the first two, with these thresholds (the issue's held-out domain:
median nearest cosine 0.34 against 0.64 between pool windows, ratio 0.53, 63% of its mass in two
catch-all clusters; a domain with its own documents in the pool sits near ratio 1):

    nearest_ratio >= 0.85 and general mass <= 2 x its pool share  -> covered
    nearest_ratio <  0.70 or  general mass >  max(0.5, 2 x its pool share) -> little close to the domain
    otherwise                                                      -> partly covered

Nearest neighbours are exact (inner product on unit rows: faiss, or torch where faiss is not installed,
as on a GPU machine without it) against the whole pool up to `REFERENCE_CAP` windows, beyond which both
sides search the same seeded sample of the pool, so the two medians stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crisp_pl.costs import nearest_neighbour_flops

REFERENCE_CAP = 250_000  # pool windows searched for nearest neighbours (a seeded sample beyond it)
POOL_QUERIES = 2_000  # pool windows whose own nearest neighbour sets the yardstick
GENERAL_CLUSTERS = 2  # the largest pool clusters, where far-away text collects
COVERED, PARTLY, UNCOVERED = 0.85, 0.70, 0.5


@dataclass
class Coverage:
    metrics: dict[str, float]
    rows: pd.DataFrame
    """One row per specialist piece and per sampled pool window: set (specialist|pool), nearest, centroid."""

    @property
    def verdict(self) -> str:
        return verdict(self.metrics)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _nearest(reference: np.ndarray, queries: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """(Q,) the largest cosine of each query to a reference row (not its own row `exclude[q]`)."""
    k = 2 if exclude is not None else 1
    try:
        import faiss
    except ImportError:
        scores, ids = _search_torch(reference, queries, k)
    else:
        index = faiss.IndexFlatIP(reference.shape[1])
        index.add(reference)
        scores, ids = index.search(queries, k)
    if exclude is None:
        return scores[:, 0]
    return np.where(ids[:, 0] == exclude, scores[:, 1], scores[:, 0])


def _search_torch(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss.IndexFlatIP's exact search as matmuls, on the GPU when torch sees one: (Q, k) scores and ids."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = torch.from_numpy(np.ascontiguousarray(reference, np.float32)).to(device)
    step = max(1, 2**24 // max(len(ref), 1))  # query rows per product: its (rows, reference) block stays <= 64 MB
    scores, ids = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]  # no queries: empty, as faiss
    for s in range(0, len(queries), step):
        block = torch.from_numpy(np.ascontiguousarray(queries[s : s + step], np.float32)).to(device)
        top = (block @ ref.T).topk(min(k, len(ref)), dim=1)
        scores.append(top.values.cpu().numpy())
        ids.append(top.indices.cpu().numpy())
    return np.concatenate(scores), np.concatenate(ids)


def _centroid_cosine(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x, _unit(centroids)[labels])


def coverage(pool_embeddings: np.ndarray, specialist_embeddings: np.ndarray, pool_labels: np.ndarray,
             specialist_labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator,
             specialist_weights: np.ndarray | None = None) -> Coverage:
    """The diagnostic at one tree level: `*_labels` (N,), (P,) cluster ids there, `centroids` (C, D)."""
    num_clusters = len(centroids)
    reference_ids = np.arange(len(pool_embeddings))
    if len(reference_ids) > REFERENCE_CAP:
        reference_ids = np.sort(rng.choice(len(pool_embeddings), REFERENCE_CAP, replace=False))
    reference = _unit(pool_embeddings[reference_ids])
    queries = np.sort(rng.choice(len(reference_ids), min(POOL_QUERIES, len(reference_ids)), replace=False))
    specialist = _unit(specialist_embeddings)

    spec_nearest = _nearest(reference, specialist)
    pool_nearest = _nearest(reference, reference[queries], exclude=queries)
    spec_centroid = _centroid_cosine(specialist, specialist_labels, centroids)
    pool_centroid = _centroid_cosine(reference[queries], pool_labels[reference_ids[queries]], centroids)

    weights = np.ones(len(specialist_labels)) if specialist_weights is None else np.asarray(specialist_weights, np.float64)
    p_spec = np.bincount(specialist_labels, weights, minlength=num_clusters) / weights.sum()
    p_pool = np.bincount(pool_labels, minlength=num_clusters) / len(pool_labels)
    general = np.argsort(-p_pool, kind="stable")[:GENERAL_CLUSTERS]
    nonzero = p_spec[p_spec > 0]
    metrics = {
        "specialist_nearest_median": float(np.median(spec_nearest)),
        "pool_nearest_median": float(np.median(pool_nearest)),
        "nearest_ratio": float(np.median(spec_nearest) / max(np.median(pool_nearest), 1e-12)),
        "specialist_centroid_median": float(np.median(spec_centroid)),
        "pool_centroid_median": float(np.median(pool_centroid)),
        "general_clusters": float(len(general)),
        "general_specialist_mass": float(p_spec[general].sum()),
        "general_pool_mass": float(p_pool[general].sum()),
        "effective_clusters": float(np.exp(-np.sum(nonzero * np.log(nonzero)))),
        "clusters": float(num_clusters),
    }
    rows = pd.concat([
        pd.DataFrame({"set": "specialist", "nearest": spec_nearest, "centroid": spec_centroid, "cluster": specialist_labels}),
        pd.DataFrame({"set": "pool", "nearest": pool_nearest, "centroid": pool_centroid, "cluster": pool_labels[reference_ids[queries]]}),
    ], ignore_index=True)
    return Coverage(metrics, rows)


def coverage_flops(pool_windows: int, specialist_pieces: int) -> float:
    """The diagnostic's nearest-neighbour searches: the pieces and the pool yardstick's queries against the reference."""
    reference = min(pool_windows, REFERENCE_CAP)
    return nearest_neighbour_flops(reference, specialist_pieces + min(POOL_QUERIES, reference))


def verdict(m: dict[str, float]) -> str:
    """One line a user reads before training (thresholds in the module docstring)."""
    general_share = max(m["general_pool_mass"], 1e-12)
    catch_all = m["general_specialist_mass"] > max(UNCOVERED, 2 * general_share)
    facts = (f"specialist text sits at median cosine {m['specialist_nearest_median']:.2f} from its nearest pool window "
             f"(pool windows: {m['pool_nearest_median']:.2f}); {m['general_specialist_mass']:.0%} of P(c|Ds) is in the "
             f"{int(m['general_clusters'])} largest clusters ({m['general_pool_mass']:.0%} of the pool); "
             f"it spreads over {m['effective_clusters']:.1f} effective clusters of {int(m['clusters'])}")
    if m["nearest_ratio"] < PARTLY or catch_all:
        return f"the pool holds little close to this domain: expect a small gain over uniform ({facts})"
    if m["nearest_ratio"] >= COVERED and m["general_specialist_mass"] <= 2 * general_share:
        return f"the pool covers this domain: CRISP has close text to draw ({facts})"
    return f"the pool covers this domain in part: expect a moderate gain over uniform ({facts})"


def _times(x: float) -> str:
    return f"{x:.1f}x" if x >= 1 else f"{x:.2g}x"  # a pool many times the budget draws a window 0.05 times


def repetition(m: dict[str, float]) -> str:
    """How often a drawn window repeats at the planned budget, against uniform over the pool (and without the cap)."""
    uncapped = "uncapped_expected_repetition" in m
    return (f"a drawn window repeats {_times(m['expected_repetition'])} in expectation at this budget"
            + (f" (without the cap: {_times(m['uncapped_expected_repetition'])})" if uncapped else "")
            + f", uniform over the pool {_times(m['uniform_repetition'])}; no window is drawn more than "
            f"{_times(m['max_draws_per_window'])} in expectation"
            + (f" (without the cap: {_times(m['uncapped_max_draws_per_window'])})" if uncapped else ""))
