"""What the filter baselines (classifier, CED, DSIR) share: how many windows to keep, and the group.

A filter scores pool windows and keeps some of them; training then draws uniformly from the kept
windows, so the selection is one group of weight 1. Every filter keeps
`k = round(keep_fraction * n)` of the `n` windows it could choose from (Python's round: halves go
to the even number), and a request that keeps none is an error rather than an empty selection.
"""

from __future__ import annotations

import numpy as np

from crisp_pl.sampling import Groups


def kept_count(keep_fraction: float, n_candidates: int) -> int:
    """k = round(keep_fraction * n_candidates); ValueError when that keeps no window."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if n_candidates < 1:
        raise ValueError("there are no pool windows to select from")
    k = int(round(keep_fraction * n_candidates))
    if k < 1:
        raise ValueError(f"keep_fraction={keep_fraction} keeps round({keep_fraction} * {n_candidates}) = 0 windows; "
                         f"raise selection.keep_fraction to at least {0.5 / n_candidates:.3g}")
    return k


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k candidates with the highest scores (ties: the lower window index), sorted by index."""
    order = np.lexsort((candidates, -scores[candidates]))  # primary key: score, descending
    return np.sort(candidates[order[:k]])


def filter_groups(selected: np.ndarray, info: dict) -> Groups:
    """One group of weight 1 holding the selected pool windows (unique, sorted)."""
    selected = np.sort(np.asarray(selected, dtype=np.int64))
    assert len(np.unique(selected)) == len(selected), "a filter selected a window twice"
    return Groups.of("pool", selected, {key: float(value) for key, value in info.items()})
