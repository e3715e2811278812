"""Statistics over seeds, on plain DataFrames: a group's mean and standard error, and paired differences.

A row of `runs` is one finished point. `group` names the point without its seed (every seed of
one configuration shares it) and `seed` its replicate; metric columns hold final values (NaN or
absent where a point did not log the metric).

- mean over seeds and standard error SE = sample standard deviation (ddof=1) / sqrt(n), n the
  seeds with a value; SE is NaN when n < 2 (one seed has no spread to measure).
- a paired difference of `group` against `reference` (same task) subtracts the reference's value
  from the group's seed by seed, over the seeds both have a value for; its mean and SE are those of
  the n differences. A seed present on one side only is left out of the pairing and listed in
  `unpaired`, so a missing run never pairs seed 2 of one group with seed 1 of another.

The reference groups a study is compared against are found by method and fine-tuning: the
generalist is method `uniform` without fine-tuning, CRISP is method `crisp` without fine-tuning
(the variant named `crisp` where a study has several CRISP variants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MeanSE:
    n: int
    mean: float  # NaN when n == 0
    se: float  # NaN when n < 2


@dataclass(frozen=True)
class Paired:
    n: int  # seeds both sides have a value for
    mean: float  # mean of group - reference over those seeds (NaN when n == 0)
    se: float  # standard error of that mean (NaN when n < 2)
    seeds: tuple  # the paired seeds, sorted
    unpaired: tuple  # seeds with a value on one side only, sorted


def mean_se(values) -> MeanSE:
    """Mean and standard error (sample std / sqrt(n)) of the non-NaN values."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    se = float(x.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return MeanSE(n, mean, se)


def by_seed(runs: pd.DataFrame, metric: str, group: str) -> pd.Series:
    """The metric of `group` indexed by seed (seeds without a value dropped); a seed twice is an error."""
    rows = runs[runs["group"] == group]
    if metric not in rows:
        return pd.Series(dtype=float)
    values = rows.set_index("seed")[metric].astype(float).dropna()
    repeated = values.index[values.index.duplicated()].unique().tolist()
    if repeated:
        raise ValueError(f"group {group!r} has more than one run for seed {repeated[0]} of {metric}")
    return values


def groups(runs: pd.DataFrame) -> list[str]:
    """Group names in order of first appearance."""
    return list(dict.fromkeys(runs["group"]))


def summarize(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per group (first-appearance order): group, n, mean, se, seeds (tuple of the seeds with a value)."""
    rows = []
    for group in groups(runs):
        values = by_seed(runs, metric, group)
        stats = mean_se(values)
        rows.append({"group": group, "n": stats.n, "mean": stats.mean, "se": stats.se, "seeds": tuple(sorted(values.index))})
    return pd.DataFrame(rows, columns=["group", "n", "mean", "se", "seeds"])


def paired_difference(runs: pd.DataFrame, metric: str, group: str, reference: str) -> Paired:
    """`group` minus `reference`, seed by seed, over the seeds both have; mean and SE of the differences."""
    a, b = by_seed(runs, metric, group), by_seed(runs, metric, reference)
    common = sorted(set(a.index) & set(b.index))
    stats = mean_se([a[s] - b[s] for s in common])
    return Paired(stats.n, stats.mean, stats.se, tuple(common), tuple(sorted(set(a.index) ^ set(b.index))))


def paired_differences(runs: pd.DataFrame, metric: str, reference: str) -> pd.DataFrame:
    """Every other group against `reference`: group, n, mean, se, seeds, unpaired (first-appearance order)."""
    rows = [{"group": group, **vars(paired_difference(runs, metric, group, reference))}
            for group in groups(runs) if group != reference]
    return pd.DataFrame(rows, columns=["group", "n", "mean", "se", "seeds", "unpaired"])


def reference_groups(runs: pd.DataFrame, method: str, finetuned: bool = False) -> list[str]:
    """Groups of `method` that did not fine-tune (the generalist: `uniform`; CRISP: `crisp`), in order;
    with `finetuned`, those that did (a study whose only generalist is fine-tuned: `generalist+ft`).

    Where a variant is named after the method (`crisp`), it alone is the reference: other variants of
    the method are ablations or controls (`crisp_flat`), compared against it, not references themselves.
    A missing `finetune` column counts as no fine-tuning."""
    finetune = runs["finetune"].fillna(False).astype(bool) if "finetune" in runs else pd.Series(False, index=runs.index)
    candidates = runs[(runs["method"] == method) & (finetune == finetuned)]
    if "variant" in candidates and (candidates["variant"] == method).any():
        candidates = candidates[candidates["variant"] == method]
    return groups(candidates)


def condition(group: str) -> str:
    """The swept values a group holds besides its method and task: `crisp+ft,task=medical,train.max_steps=150`
    -> `train.max_steps=150`; `model.size=mini,selection.method=crisp` -> `model.size=mini`; a variant
    alone -> ``. Groups of one condition are the methods compared at one point of a sweep."""
    return ",".join(part for part in group.split(",") if "=" in part and not part.startswith(("selection.method=", "task=", "seed=")))


def format_mean_se(mean: float, se: float = math.nan) -> str:
    """`40834 ± 879`, `0.320 ± 0.020`: the SE to two significant digits and the mean to the same decimal place;
    the mean alone (4 significant digits, a whole number as such) when SE is NaN (one seed); `-` when there is no mean."""
    if mean is None or math.isnan(mean):
        return "-"
    if se is None or math.isnan(se):
        magnitude = abs(mean)
        if float(mean).is_integer() and magnitude < 1e6:  # counts: 2016 tokens, 31 windows
            return str(int(mean))
        if 1 <= magnitude < 1e6:
            return f"{mean:.{max(0, 3 - math.floor(math.log10(magnitude)))}f}"
        return f"{mean:.4g}"
    decimals = max(0, 1 - math.floor(math.log10(se))) if se > 0 else 4
    return f"{mean:.{decimals}f} ± {se:.{decimals}f}"


SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def format_quantity(value: float, unit: str) -> str:
    """A cost in a unit a reader takes in at a glance: `3.5 GFLOP`, `1.2 M` tokens, `4.0 s` / `12 min` / `3.2 h`
    for device-hours (under 10 ms: `< 0.01 s`); zero as `0`, a missing value as `-`."""
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    if unit == "hours":
        seconds = value * 3600
        if seconds < 0.01:
            return "< 0.01 s"  # bookkeeping (uniform's selection), not work: no spurious digits
        return f"{seconds:.3g} s" if seconds < 60 else f"{seconds / 60:.3g} min" if seconds < 3600 else f"{value:.3g} h"
    for scale, prefix in SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()

