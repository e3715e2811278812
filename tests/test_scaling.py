"""Scaling-law fits and the optimal split on synthetic runs drawn from known laws: the fit recovers the
parameters, held-out error picks the law the data came from, and the planner finds the optimum a
brute-force search finds."""

import numpy as np
import pandas as pd
import pytest

from analysis.scaling import LAWS, FitResult, compare_laws, extrapolation, fit_law, predicted_vs_measured
from analysis.split_plan import iso_flop_figure, optimal_split, tokens

# N in millions of parameters, tokens in millions (analysis.scaling.UNIT)
TRUE = {"mismatch": {"E": 1.7, "A": 1.5, "alpha": 0.34, "B": 2.0, "beta": 0.28, "C": 0.8, "gamma": 0.6, "S": 2.0},
        "effective_data": {"E": 1.7, "A": 1.5, "alpha": 0.34, "B": 2.0, "beta": 0.28, "k": 4.0}}


def theta(law: str) -> np.ndarray:
    return np.array([np.log(TRUE[law][n[4:]]) if n.startswith("log_") else TRUE[law][n] for n in LAWS[law].names])


def synthetic_runs(law: str, noise: float = 0.002, seed: int = 0) -> pd.DataFrame:
    """A split study's grid (4 sizes x 5 D x 6 D′), losses from `law` times log-normal noise."""
    grid = [(n, d, dp) for n in (1e5, 3e5, 1e6, 3e6) for d in (0, 1e6, 4e6, 1.6e7, 6.4e7)
            for dp in (0, 2.5e5, 1e6, 4e6, 1.6e7, 6.4e7) if d + dp > 0]
    runs = pd.DataFrame(grid, columns=["N", "D", "Dp"])
    clean = np.exp(LAWS[law].log_predict(theta(law), runs["N"], runs["D"], runs["Dp"]))
    runs["loss"] = clean * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(runs)))
    return runs


def test_the_fit_recovers_a_known_law_and_extrapolates_to_the_largest_model(tmp_path):
    runs = synthetic_runs("mismatch")
    fit = fit_law(runs, "mismatch", bootstrap=20, seed=0)
    truth = TRUE["mismatch"]
    assert fit.params["alpha"] == pytest.approx(truth["alpha"], abs=0.03)
    assert fit.params["beta"] == pytest.approx(truth["beta"], abs=0.03)
    assert fit.params["E"] == pytest.approx(truth["E"], rel=0.1) and fit.params["C"] == pytest.approx(truth["C"], rel=0.2)
    assert fit.rmse_log < 0.004  # the noise is 0.2%
    low, high = fit.ci["beta"]
    assert low <= fit.params["beta"] <= high and high - low < 0.05
    assert FitResult.from_dict(fit.to_dict()).predict(runs) == pytest.approx(fit.predict(runs))
    held_out_fit, held_out = extrapolation(runs, "mismatch")
    assert (held_out["N"] == 3e6).all() and held_out["rel_error"].max() < 0.02  # the goal: within 2%
    mask = (runs["N"] == runs["N"].max()).to_numpy()
    assert [p.suffix for p in predicted_vs_measured(held_out_fit, runs, mask, tmp_path / "fit")] == [".png", ".pdf"]


@pytest.mark.parametrize("law", ["mismatch", "effective_data"])
def test_held_out_error_picks_the_law_the_runs_came_from(law):
    table = compare_laws(synthetic_runs(law, seed=1))
    assert table.loc[0, "law"] == law, table
    assert table.set_index("law").loc["chinchilla", "heldout_mean_rel_error"] > table.loc[0, "heldout_mean_rel_error"]


def test_the_planner_finds_the_optimum_of_a_known_law_within_the_budget(tmp_path):
    fit = FitResult("mismatch", theta("mismatch"), TRUE["mismatch"])
    budget = 1e17
    best = optimal_split(fit, budget, domains=4)
    assert best.flops == pytest.approx(budget)
    log_n, shares = np.meshgrid(np.linspace(np.log(1e4), np.log(1e11), 900), np.linspace(0, 0.999, 900), indexing="ij")
    D, Dp = tokens(np.exp(log_n), shares, budget, 4)
    brute = fit.predict_at(np.exp(log_n), D, Dp)
    i, j = np.unravel_index(np.argmin(brute), brute.shape)
    assert best.loss <= brute[i, j] + 1e-6
    assert best.N == pytest.approx(np.exp(log_n[i, j]), rel=0.05) and best.share == pytest.approx(shares[i, j], abs=0.01)
    # more domains share the base: each gets fewer specialization tokens
    per_domain = [optimal_split(fit, budget, domains=k).Dp for k in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(per_domain, per_domain[1:]))
    # when every token counts alike, a specialization (paid K times) never beats pretraining
    chinchilla = FitResult("chinchilla", theta("mismatch")[:5], {})
    assert optimal_split(chinchilla, budget, domains=2).share == pytest.approx(0.0, abs=1e-3)
    paths = iso_flop_figure(fit, [1e15, 1e16, 1e17], 4, tmp_path / "iso", measured=synthetic_runs("mismatch").head(20))
    assert all(p.is_file() for p in paths)
