"""The optimal split of a compute budget between a shared base and K specializations.

A budget of C FLOPs trains one base of N parameters on D generalist tokens and K specialists (one a
domain) on D′ tokens each: C = 6·N·(D + K·D′) by default (the base is paid once, amortized over
the K domains). With s the share of C spent on specialization, D = (1 − s)·C / 6N and D′ = s·C /
(6N·K). `optimal_split` minimizes a fitted law's predicted loss over N and s: a dense grid over
log N and s, then a bounded local refinement from the best grid point.

N is searched within TRUSTED of the fitted runs' sizes (a law measured over a decade of N says little
about N a thousand times smaller or larger); an optimum on that range's edge is flagged `at_bound`:
the fit wants a size it has not seen, and the answer is that edge, not an optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.scaling import FitResult

TRUSTED = (1 / 4, 16)  # N from the smallest fitted size / 4 to the largest x 16


@dataclass(frozen=True)
class Split:
    N: float
    D: float
    Dp: float
    share: float
    """s: the share of the budget spent on the K specializations."""
    loss: float
    flops: float
    """6·N·(D + K·D′): equals the budget."""
    at_bound: bool = False
    """N sits on the edge of the searched range: the fit does not determine the size."""


def size_range(fit: FitResult) -> tuple[float, float]:
    """The N searched: TRUSTED around the fitted sizes, or 1e4 to 1e11 for a fit that does not record them."""
    low, high = fit.n_fitted
    return (1e4, 1e11) if not np.isfinite(low) else (low * TRUSTED[0], high * TRUSTED[1])


def tokens(N, share, budget: float, domains: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, D′) that spend `budget` at model size N and specialization share s."""
    per_token = 6.0 * np.asarray(N, dtype=np.float64)
    return (1.0 - np.asarray(share)) * budget / per_token, np.asarray(share) * budget / (per_token * domains)


def optimal_split(fit: FitResult, budget: float, domains: int = 1, n_range=None, grid: int = 241) -> Split:
    """The N, D, D′ minimizing `fit`'s predicted loss on `budget` FLOPs shared by `domains` specializations."""
    n_range = n_range or size_range(fit)
    log_n = np.linspace(np.log(n_range[0]), np.log(n_range[1]), grid)
    shares = np.linspace(0.0, 0.999, grid)
    LN, S = np.meshgrid(log_n, shares, indexing="ij")
    D, Dp = tokens(np.exp(LN), S, budget, domains)
    loss = fit.predict_at(np.exp(LN), D, Dp)
    i, j = np.unravel_index(np.nanargmin(loss), loss.shape)

    def objective(x):
        d, dp = tokens(np.exp(x[0]), x[1], budget, domains)
        return float(fit.predict_at(np.exp(x[0]), d, dp)[()])

    step = (log_n[1] - log_n[0], shares[1] - shares[0])
    bounds = [(max(log_n[0], log_n[i] - step[0]), min(log_n[-1], log_n[i] + step[0])),
              (max(0.0, shares[j] - step[1]), min(0.999, shares[j] + step[1]))]
    best = minimize(objective, [log_n[i], shares[j]], method="L-BFGS-B", bounds=bounds)
    x = best.x if best.fun <= loss[i, j] else np.array([log_n[i], shares[j]])
    N, share = float(np.exp(x[0])), float(x[1])
    d, dp = (float(v) for v in tokens(N, share, budget, domains))
    at_bound = bool(min(abs(x[0] - log_n[0]), abs(x[0] - log_n[-1])) < 1e-3)
    return Split(N, d, dp, share, objective(x), 6.0 * N * (d + domains * dp), at_bound)


def iso_flop_curves(fit: FitResult, budgets, domains: int = 1, shares=None, n_range=None) -> pd.DataFrame:
    """For each budget and share s: the best N's predicted loss (columns budget, share, N, D, Dp, loss)."""
    shares = np.linspace(0.0, 0.95, 39) if shares is None else np.asarray(shares)
    n_range = n_range or size_range(fit)
    log_n = np.linspace(np.log(n_range[0]), np.log(n_range[1]), 400)
    rows = []
    for budget in budgets:
        for share in shares:
            D, Dp = tokens(np.exp(log_n), share, budget, domains)
            loss = fit.predict_at(np.exp(log_n), D, Dp)
            k = int(np.nanargmin(loss))
            rows.append({"budget": budget, "share": share, "N": float(np.exp(log_n[k])), "D": float(D[k]), "Dp": float(Dp[k]),
                         "loss": float(loss[k])})
    return pd.DataFrame(rows)


def iso_flop_figure(fit: FitResult, budgets, domains: int, stem, measured: pd.DataFrame | None = None) -> list:
    """Predicted loss against the share of compute on specialization, one curve per budget, each optimum
    marked; `measured` runs (N, D, Dp, loss) drawn at their share, coloured by their nearest budget."""
    import matplotlib.pyplot as plt

    from analysis.figures import save_figure

    curves = iso_flop_curves(fit, budgets, domains)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = {}
    for i, (budget, curve) in enumerate(curves.groupby("budget")):
        colors[budget] = f"C{i}"
        ax.plot(curve["share"], curve["loss"], color=colors[budget], label=f"{budget:.0e} FLOPs")
        best = optimal_split(fit, budget, domains)
        ax.scatter([best.share], [best.loss], color=colors[budget], marker="*", s=90, zorder=3)
    if measured is not None and len(measured):
        flops = 6.0 * measured["N"] * (measured["D"] + domains * measured["Dp"])
        share = domains * measured["Dp"] / (measured["D"] + domains * measured["Dp"])
        nearest = [min(colors, key=lambda b: abs(np.log(b) - np.log(f))) for f in flops]
        ax.scatter(share, measured["loss"], c=[colors[b] for b in nearest], s=14, alpha=0.6, marker="o", label="measured runs")
    ax.set(xlabel=f"share of compute on specialization (K = {domains} domains)", ylabel="predicted specialist loss (nats/token)",
           title=f"iso-FLOP curves, {fit.law} law (★ optimum)")
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, stem)
