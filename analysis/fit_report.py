"""`crisp fit NAME`: the scaling-law report of a split study, per task.

For each task: every law of analysis/scaling.py is fitted with the largest model held out, and the
one with the lowest held-out error is chosen (`fit-TASK.md` shows the comparison); the chosen law is
refitted on every run with bootstrap intervals and saved as `fit-TASK.json` (what `crisp split plan`
reads); figures: predicted against measured with the largest model held out (`fit-TASK.png/.pdf`)
and iso-FLOP curves over the study's compute range with its runs on top (`isoflop-TASK.png/.pdf`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.scaling import FitResult, compare_laws, extrapolation, fit_law, holdout_largest, predicted_vs_measured
from analysis.split_plan import iso_flop_figure, optimal_split, size_range


def fit_task(runs: pd.DataFrame, task: str, folder: Path, bootstrap: int = 200, domains: int = 2) -> list[Path]:
    """The report of one task's runs (analysis/split_runs.py columns) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    held_out = holdout_largest(runs)
    table = compare_laws(runs, held_out=held_out)
    chosen = str(table.loc[0, "law"])
    extrapolated, test = extrapolation(runs, chosen, held_out)
    fit = fit_law(runs, chosen, bootstrap=bootstrap)
    flops = 6.0 * runs["N"] * (runs["D"] + runs["Dp"])
    budgets = np.logspace(np.log10(flops.min()), np.log10(flops.max() * 10), 4)
    record = {"task": task, "fit": fit.to_dict(), "chosen_by": "held-out mean relative error, largest N held out",
              "comparison": table.to_dict("records"), "heldout_max_rel_error": float(test["rel_error"].max()),
              "heldout_mean_rel_error": float(test["rel_error"].mean()), "runs": len(runs)}
    out = folder / f"fit-{task}.json"
    out.with_suffix(".partial").write_text(json.dumps(record, indent=1))
    out.with_suffix(".partial").replace(out)
    paths = [out, _markdown(record, fit, table, test, folder / f"fit-{task}.md", budgets, domains)]
    paths += predicted_vs_measured(extrapolated, runs, held_out, folder / f"fit-{task}")
    paths += iso_flop_figure(fit, budgets, domains, folder / f"isoflop-{task}", measured=runs)
    return paths


def load_fit(folder: Path, task: str) -> FitResult:
    path = folder / f"fit-{task}.json"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("fit-") for p in folder.glob("fit-*.json"))
        raise LookupError(f"{path}: no fit for task {task!r} (fitted: {', '.join(known) or 'none'}; run crisp fit first)")
    return FitResult.from_dict(json.loads(path.read_text())["fit"])


def _markdown(record: dict, fit: FitResult, table: pd.DataFrame, test: pd.DataFrame, path: Path, budgets, domains: int) -> Path:
    lines = [f"# Scaling-law fit: {record['task']} ({record['runs']} runs)", "",
             "Laws fitted with the largest model held out, best held-out error first:", "",
             table.to_markdown(index=False, floatfmt=".4g"), "",
             f"Chosen: `{fit.law}`; on the held-out largest model its relative error is "
             f"{record['heldout_mean_rel_error']:.2%} on average, {record['heldout_max_rel_error']:.2%} at most (goal: 2%).", "",
             "Refitted on every run (N and tokens in millions; 95% bootstrap intervals):", "",
             "| parameter | value | 95% interval |", "|---|---|---|"]
    lines += [f"| {k} | {v:.4g} | {fit.ci[k][0]:.4g} – {fit.ci[k][1]:.4g} |" if k in fit.ci else f"| {k} | {v:.4g} | |"
              for k, v in fit.params.items()]
    lines += ["", f"Optimal splits for K = {domains} domains sharing the base (6N(D + K·D′) FLOPs):", "",
              "| budget (FLOPs) | N | D (tokens) | D′ per domain | share on specialization | predicted loss |", "|---|---|---|---|---|---|"]
    for budget in budgets:
        best = optimal_split(fit, budget, domains)
        edge = " (edge of the searched sizes)" if best.at_bound else ""
        lines.append(f"| {budget:.2g} | {best.N:.3g}{edge} | {best.D:.3g} | {best.Dp:.3g} | {best.share:.2f} | {best.loss:.4f} |")
    low, high = size_range(fit)
    lines += ["", f"N is searched from {low:.3g} to {high:.3g} (the fitted sizes / 4 to x 16); an optimum on the edge means the "
              "fit wants a size it has not seen."]
    path.write_text("\n".join(lines) + "\n")
    return path
