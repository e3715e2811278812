"""Scaling laws of the specialist loss L(N, D, D′), fitted the standard way.

Runs are a DataFrame with columns `N` (non-embedding parameters), `D` (generalist pretraining
tokens, 0 for a model trained on targeted data only), `Dp` (specialization tokens D′, 0 for the
base alone) and `loss` (held-out specialist test loss, nats a token); analysis/split_runs.py makes
it from a split study. D + D′ > 0 on every row.

The laws (the Optimal Splitting paper's own functional form is not at hand; these are named forms,
chosen between by their error on held-out runs, not by taste):

- `chinchilla`:      L = E + A/N^α + B/(D + D′)^β
  Hoffmann et al.'s form with every token counted alike: the reference, in which specializing
  is no better than more pretraining.
- `effective_data`:  L = E + A/N^α + B/(D + k·D′)^β
  a specialization token is worth k generalist tokens (k fitted): the transfer view.
- `mismatch`:        L = E + A/N^α + B/(D + D′)^β + C/(1 + D′/S)^γ
  an additive specialization term: a generalist model pays a domain-mismatch penalty C, which
  D′ tokens of targeted data remove as a power law past a token scale S. Finite at D′ = 0 and at
  D = 0, and the only form here with an interior optimal split (the other two put a budget
  wholly into one phase).

Fit: positive coefficients are fitted in log space (E = e^e, A = e^a, ...) and log L is predicted
as a logsumexp of the terms; the objective is the Huber loss (δ = 1e-3) of log L_pred − log L over
runs, minimized by L-BFGS-B from a grid of initial points, keeping the best (Hoffmann et al. 2022,
as replicated by Besiroglu et al. 2024). Bootstrap intervals refit resampled runs from the best
point and report percentiles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp

HUBER_DELTA = 1e-3
UNIT = 1e6  # N in millions of parameters, D and D′ in millions of tokens: coefficients of order one
REFINED = 4  # starts run to convergence after the grid's short runs


@dataclass(frozen=True)
class Law:
    name: str
    names: tuple[str, ...]
    """Parameters as fitted: `log_X` for a positive coefficient X, exponents as they are."""
    inits: tuple[tuple[float, ...], ...]
    bounds: tuple[tuple[float | None, float | None], ...]

    def log_predict(self, theta: np.ndarray, N, D, Dp) -> np.ndarray:
        return self.log_predict_and_grad(theta, N, D, Dp, grad=False)[0]

    def log_predict_and_grad(self, theta: np.ndarray, N, D, Dp, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """log L (runs,) and its gradient in theta (params, runs): log L = logsumexp of the terms, so
        its gradient is the terms' gradients weighted by their softmax."""
        N, D, Dp = (np.asarray(x, dtype=np.float64) / UNIT for x in (N, D, Dp))
        p = dict(zip(self.names, theta))
        index = {name: i for i, name in enumerate(self.names)}
        terms, grads = [], []

        def term(value, **partials):
            terms.append(np.broadcast_to(value, N.shape))
            if grad:
                g = np.zeros((len(self.names),) + N.shape)
                for name, partial in partials.items():
                    g[index[name]] = partial
                grads.append(g)

        term(p["log_E"], log_E=1.0)
        term(p["log_A"] - p["alpha"] * np.log(N), log_A=1.0, alpha=-np.log(N))
        if self.name == "effective_data":
            k = np.exp(p["log_k"])
            tokens = D + k * Dp
            term(p["log_B"] - p["beta"] * np.log(tokens), log_B=1.0, beta=-np.log(tokens), log_k=-p["beta"] * k * Dp / tokens)
        else:
            tokens = D + Dp
            term(p["log_B"] - p["beta"] * np.log(tokens), log_B=1.0, beta=-np.log(tokens))
        if self.name == "mismatch":
            ratio = Dp / np.exp(p["log_S"])
            term(p["log_C"] - p["gamma"] * np.log1p(ratio), log_C=1.0, gamma=-np.log1p(ratio),
                 log_S=p["gamma"] * ratio / (1.0 + ratio))
        stacked = np.stack(terms)
        log_loss = logsumexp(stacked, axis=0)
        if not grad:
            return log_loss, None
        weights = np.exp(stacked - log_loss)  # (terms, runs...) softmax
        return log_loss, np.einsum("t...,tp...->p...", weights, np.stack(grads))

    def coefficients(self, theta: np.ndarray) -> dict[str, float]:
        """E, A, alpha, B, beta (, k | C, gamma, S), with N and tokens in millions (UNIT)."""
        return {(n[4:] if n.startswith("log_") else n): float(np.exp(v) if n.startswith("log_") else v)
                for n, v in zip(self.names, theta)}


_BASE = (("log_E", (0.0, 1.0)), ("log_A", (-1.0, 1.0)), ("alpha", (0.2, 0.6)), ("log_B", (-1.0, 1.0)), ("beta", (0.2, 0.6)))
_EXTRA = {"chinchilla": (), "effective_data": (("log_k", (0.0, 2.0)),),
          "mismatch": (("log_C", (-1.0, 0.5)), ("gamma", (0.5,)), ("log_S", (-1.0, 1.5)))}
_BOUNDS = {"alpha": (0.0, 2.0), "beta": (0.0, 2.0), "gamma": (0.0, 3.0), "log_k": (-10.0, 10.0), "log_S": (-15.0, 15.0)}


def _law(name: str) -> Law:
    spec = _BASE + _EXTRA[name]
    return Law(name, tuple(n for n, _ in spec), tuple(itertools.product(*(v for _, v in spec))),
               tuple(_BOUNDS.get(n, (-20.0, 40.0)) for n, _ in spec))


LAWS = {name: _law(name) for name in _EXTRA}


def _huber(residual: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(residual)
    return np.where(a <= delta, 0.5 * residual**2, delta * (a - 0.5 * delta))


def _minimize(law: Law, runs: pd.DataFrame, starts, delta: float) -> tuple[np.ndarray, float]:
    N, D, Dp, log_loss = runs["N"].to_numpy(float), runs["D"].to_numpy(float), runs["Dp"].to_numpy(float), np.log(runs["loss"].to_numpy(float))

    def objective(theta):
        predicted, grad = law.log_predict_and_grad(theta, N, D, Dp)
        residual = predicted - log_loss
        psi = np.clip(residual, -delta, delta)  # the Huber loss's derivative
        return float(np.sum(_huber(residual, delta))), grad @ psi

    # every start a short way, then the few best to convergence: most of the grid's starts are hopeless
    tried = []
    for start in starts:
        result = minimize(objective, np.asarray(start, float), jac=True, method="L-BFGS-B", bounds=law.bounds,
                          options={"maxiter": 60 if len(starts) > REFINED else 15000})
        if np.isfinite(result.fun):
            tried.append((result.fun, result.x))
    if not tried:
        raise ValueError(f"{law.name}: no initial point gave a finite objective")
    tried.sort(key=lambda item: item[0])
    if len(starts) > REFINED:
        tried = sorted(((r.fun, r.x) for r in (minimize(objective, x, jac=True, method="L-BFGS-B", bounds=law.bounds,
                                                        options={"maxiter": 15000}) for _, x in tried[:REFINED])),
                       key=lambda item: item[0])
    return tried[0][1], tried[0][0]


@dataclass
class FitResult:
    law: str
    theta: np.ndarray
    params: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Bootstrap percentile interval of each parameter (empty without a bootstrap)."""
    n: int = 0
    rmse_log: float = float("nan")
    """Root mean square of log L_pred − log L over the fitted runs."""
    n_fitted: tuple[float, float] = (float("nan"), float("nan"))
    """The smallest and largest N of the fitted runs: how far the law was measured in model size."""

    def predict(self, runs: pd.DataFrame) -> np.ndarray:
        return np.exp(LAWS[self.law].log_predict(self.theta, runs["N"], runs["D"], runs["Dp"]))

    def predict_at(self, N, D, Dp) -> np.ndarray:
        return np.exp(LAWS[self.law].log_predict(self.theta, N, D, Dp))

    def to_dict(self) -> dict:
        return {"law": self.law, "theta": [float(t) for t in self.theta], "params": self.params,
                "ci": {k: list(v) for k, v in self.ci.items()}, "n": self.n, "rmse_log": self.rmse_log,
                "n_fitted": list(self.n_fitted)}

    @classmethod
    def from_dict(cls, data: dict) -> "FitResult":
        return cls(data["law"], np.asarray(data["theta"]), data["params"], {k: tuple(v) for k, v in data["ci"].items()},
                   data["n"], data["rmse_log"], tuple(data.get("n_fitted", (float("nan"),) * 2)))


def fit_law(runs: pd.DataFrame, law: str = "mismatch", *, bootstrap: int = 0, seed: int = 0,
            delta: float = HUBER_DELTA) -> FitResult:
    """Fit `law` to `runs` (module docstring); `bootstrap` resamples give each parameter a 95% interval."""
    spec = LAWS[law]
    theta, _ = _minimize(spec, runs, spec.inits, delta)
    rmse = float(np.sqrt(np.mean((spec.log_predict(theta, runs["N"], runs["D"], runs["Dp"]) - np.log(runs["loss"])) ** 2)))
    result = FitResult(law, theta, spec.coefficients(theta), n=len(runs), rmse_log=rmse,
                       n_fitted=(float(runs["N"].min()), float(runs["N"].max())))
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = [spec.coefficients(_minimize(spec, runs.iloc[rng.integers(0, len(runs), len(runs))], [theta], delta)[0])
                 for _ in range(bootstrap)]
        result.ci = {k: (float(np.percentile([d[k] for d in draws], 2.5)), float(np.percentile([d[k] for d in draws], 97.5)))
                     for k in result.params}
    return result


def holdout_largest(runs: pd.DataFrame, by: str = "N") -> np.ndarray:
    """Boolean mask of the runs to hold out: the largest model (`N`), or the largest token count (`tokens`: D + D′)."""
    values = runs["N"] if by == "N" else runs["D"] + runs["Dp"]
    return (values == values.max()).to_numpy()


def extrapolation(runs: pd.DataFrame, law: str, held_out: np.ndarray | None = None) -> tuple[FitResult, pd.DataFrame]:
    """Fit on the runs not held out (default: all but the largest model), predict the held-out ones;
    returns the fit and the held-out runs with `predicted` and `rel_error` = |pred − obs| / obs."""
    held_out = holdout_largest(runs) if held_out is None else held_out
    fit = fit_law(runs[~held_out], law)
    test = runs[held_out].copy()
    test["predicted"] = fit.predict(test)
    test["rel_error"] = np.abs(test["predicted"] - test["loss"]) / test["loss"]
    return fit, test


def compare_laws(runs: pd.DataFrame, laws=tuple(LAWS), held_out: np.ndarray | None = None) -> pd.DataFrame:
    """Each law's held-out relative error (mean and max) and in-sample log RMSE, best held-out first."""
    rows = []
    for law in laws:
        fit, test = extrapolation(runs, law, held_out)
        rows.append({"law": law, "heldout_mean_rel_error": test["rel_error"].mean(),
                     "heldout_max_rel_error": test["rel_error"].max(), "train_rmse_log": fit.rmse_log, "params": len(fit.theta)})
    return pd.DataFrame(rows).sort_values("heldout_mean_rel_error").reset_index(drop=True)


def predicted_vs_measured(fit: FitResult, runs: pd.DataFrame, held_out: np.ndarray, stem) -> list:
    """Predicted against measured loss, held-out runs marked, y = x with a ±2% band; PNG and PDF."""
    import matplotlib.pyplot as plt

    from analysis.figures import save_figure

    predicted = fit.predict(runs)
    fig, ax = plt.subplots(figsize=(5, 5))
    low, high = min(runs["loss"].min(), predicted.min()) * 0.97, max(runs["loss"].max(), predicted.max()) * 1.03
    line = np.linspace(low, high, 2)
    ax.fill_between(line, line * 0.98, line * 1.02, color="0.9", label="±2%")
    ax.plot(line, line, color="0.5", lw=1)
    ax.scatter(runs["loss"][~held_out], predicted[~held_out], s=18, label="fitted runs")
    ax.scatter(runs["loss"][held_out], predicted[held_out], s=30, marker="D", color="C3", label="held out (largest N)")
    ax.set(xlabel="measured specialist test loss (nats/token)", ylabel="predicted loss (nats/token)",
           xlim=(low, high), ylim=(low, high), title=f"{fit.law} law")
    ax.legend(frameon=False)
    return save_figure(fig, stem)
