"""Which held-out items an evaluation scores when it is capped: a seeded sample, stratified.

Taking the first N items in load order is a biased sample (MMLU is loaded by subject, the medical
test set by source), so a cap draws N items at random, spread over the strata (source, subject) in
proportion to their sizes, largest remainders first. The same seed always picks the same items,
so every method of a study is scored on the same ones.
"""

from __future__ import annotations

import numpy as np


def stratified_sample(strata: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most `cap` items, each stratum represented in proportion to its size.

    `strata` holds one label per item; `cap` None (or >= the number of items) keeps every item.
    """
    strata = np.asarray(strata)
    n = len(strata)
    if cap is None or cap >= n:
        return np.arange(n)
    if cap < 1:
        raise ValueError(f"an evaluation cap must be >= 1, got {cap}")
    labels, inverse = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(labels))
    quota = cap * sizes / n
    take = np.floor(quota).astype(np.int64)
    order = np.lexsort((np.arange(len(labels)), -(quota - take)))  # largest remainder first, ties by label
    take[order[: cap - take.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(inverse == s), size=k, replace=False) for s, k in enumerate(take) if k]
    return np.sort(np.concatenate(chosen))
