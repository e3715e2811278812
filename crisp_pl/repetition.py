"""Repetition at a planned budget: how often the windows of a sampling distribution are drawn, and the
distribution closest to a target that keeps every window under a cap.

A group g of `sizes[g]` windows with weight `weights[g]` receives `draws * weights[g]` of `draws`
draws, uniformly inside it, so each of its windows is drawn `draws * weights[g] / sizes[g]` times in
expectation (`draws_per_window`). Two summaries of that:

- `expected_repetition`: draws per distinct drawn window (what the run will see as repeats);
- `max_draws_per_window`: the largest expected draws of any one window (what a cap bounds).

`cap_weights` plans against the budget: of all distributions with q(g) <= R * sizes[g] / draws it
returns the one closest to the target p in KL(q || p). The KKT conditions give q(g) = min(cap(g),
lambda * p(g)), one lambda making q sum to 1: capped groups keep their cap and the mass they lose
goes to the others in proportion to p (water filling over the sorted ratios cap / p). Where the
groups p reaches cannot hold all the mass under their caps, they are all capped and the rest is
spread over the other groups in proportion to their sizes (the limit of the projection of p mixed with
a vanishing share of uniform); where the whole pool cannot (R * windows < draws), no distribution
keeps the cap, and the answer is uniform over the pool, flagged `infeasible`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def draws_per_window(sizes: np.ndarray, weights: np.ndarray, draws: float) -> np.ndarray:
    """(G,) expected draws of each window of each group (0 for an empty group)."""
    sizes, weights = np.asarray(sizes, np.float64), np.asarray(weights, np.float64)
    return np.divide(draws * weights, sizes, out=np.zeros_like(weights), where=sizes > 0)


def max_draws_per_window(sizes: np.ndarray, weights: np.ndarray, draws: float) -> float:
    return float(draws_per_window(sizes, weights, draws).max(initial=0.0))


def expected_repetition(sizes: np.ndarray, weights: np.ndarray, draws: int) -> float:
    """Draws per distinct window when `draws` windows are drawn: a window of group g is drawn with
    probability weights[g] / sizes[g] at each draw, so group g shows
    sizes[g] * (1 - (1 - weights[g] / sizes[g]) ** draws) distinct windows in expectation."""
    sizes, weights = np.asarray(sizes, np.float64), np.asarray(weights, np.float64)
    live = (sizes > 0) & (weights > 0)
    n, p = sizes[live], weights[live] / sizes[live]
    with np.errstate(divide="ignore"):  # a one-window group holding all the mass: log1p(-1) = -inf, (1 - 1)^draws = 0
        distinct = np.sum(n * -np.expm1(draws * np.log1p(-p)))  # (1 - p)^draws without underflow
    return float(draws / distinct) if distinct > 0 else 0.0


@dataclass(frozen=True)
class Capped:
    weights: np.ndarray
    """(G,) the capped distribution."""
    capped_groups: int
    """Groups held at their cap."""
    moved_mass: float
    """Mass the caps took from the target and gave to other groups: sum of max(0, p - q)."""
    infeasible: bool
    """R x windows < draws: no distribution keeps the cap; `weights` is uniform over the pool."""

    def info(self, target: np.ndarray, sizes: np.ndarray, draws: int, max_repeats: float) -> dict[str, float]:
        """What a selection logs: the cap, the budget, what the cap changed and the repetition without it."""
        return {"max_repeats": float(max_repeats), "pool_draws": float(draws), "capped_groups": float(self.capped_groups),
                "capped_mass": self.moved_mass, "cap_infeasible": float(self.infeasible),
                "uncapped_max_draws_per_window": max_draws_per_window(sizes, target, draws),
                "uncapped_expected_repetition": expected_repetition(sizes, target, draws)}


def cap_weights(target: np.ndarray, sizes: np.ndarray, draws: int, max_repeats: float) -> Capped:
    """The distribution closest to `target` in KL with at most `max_repeats` expected draws per window
    when `draws` windows are drawn (module docstring)."""
    p, sizes = np.asarray(target, np.float64), np.asarray(sizes, np.float64)
    cap = max_repeats * sizes / draws
    if cap.sum() < 1.0:  # the pool itself is too small for the budget at this cap
        q = sizes / sizes.sum()
        return Capped(q, 0, float(np.maximum(p - q, 0).sum()), True)
    support = p > 0
    q = np.zeros_like(p)
    if cap[support].sum() <= 1.0:  # every group p reaches is capped; the rest goes to the others by size
        q[support] = cap[support]
        rest = ~support & (sizes > 0)
        q[rest] = (1.0 - q.sum()) * sizes[rest] / sizes[rest].sum()
        capped = int(support.sum())
    else:
        idx = np.flatnonzero(support)
        order = idx[np.argsort(cap[idx] / p[idx], kind="stable")]  # groups in the order they hit their cap
        ratio = cap[order] / p[order]
        caps_before = np.concatenate([[0.0], np.cumsum(cap[order])[:-1]])  # mass of the first k groups, all capped
        p_from = np.cumsum(p[order][::-1])[::-1]  # target mass of the groups from k on
        lam = (1.0 - caps_before) / p_from  # lambda if exactly the first k groups are capped
        k = int(np.argmax(lam <= ratio))  # the first k consistent with its own lambda
        if k == 0:  # no cap binds: the target itself, to the bit (it draws what uncapped CRISP draws)
            return Capped(p.copy(), 0, 0.0, False)
        q[order[:k]] = cap[order[:k]]
        q[order[k:]] = lam[k] * p[order[k:]]
        capped = k
    return Capped(q, capped, float(np.maximum(p - q, 0).sum()), False)
