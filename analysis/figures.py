"""Figures and tables of a study, drawn from DataFrames (read back from MLflow by the caller).

For each study: per task, a bar chart of the held-out specialist perplexity per group (and of
multiple-choice accuracy for MCQ tasks, with the chance level `test/TASK/chance` marked when the
runs logged it), the validation loss curves, the CRISP histograms P(c|Ds) against P(c|Dg), and
`results.md`: per task, each group's mean ± standard error over seeds with its selection and
training cost, the paired differences (same seed against same seed) of every group against the
task's generalist and against its CRISP, and every run. All in one folder (the runner picks
results/figures/STUDY-SCALE/). Metric names match MLflow's (`test/TASK/ppl`, `test/arc_easy/acc`,
`cost/selection_flops`). A study's `figures` add sweep figures: a quality metric against a swept
quantity (pool size, specialist size, clusters), one line per variant, as PNG, PDF and markdown.
Every figure is written as PNG and PDF (`save_figure`); `index.md` lists every file with a caption
under the study's description (the finding it tests).

A group is a point without its seed (column `group`; `seed` its replicate): bars are the mean over
its seeds, error bars one standard error (none with a single seed), dots the seeds themselves.
The statistics are in analysis/stats.py. DataFrames without `group` / `seed` columns draw with
every point its own group of one seed.

This module knows nothing of MLflow or the study runner: `crisp figures` hands it
`StudyRunner.results()`, and any DataFrames of the same columns draw the same way.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on these machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.stats import (  # noqa: E402
    condition,
    format_mean_se,
    format_quantity,
    groups,
    paired_differences,
    reference_groups,
    summarize,
)
from analysis.style import METHOD_COLORS, group_colors, method_color  # noqa: E402


def short_label(point: str) -> str:
    """`selection.method=crisp,train.lr=0.001` -> `crisp\n0.001`: the point's values, one per line (task and seed left out)."""
    parts = [part for part in point.split(",") if not part.startswith(("task=", "seed="))]
    return "\n".join(part.split("=", 1)[-1] for part in parts) or point


def with_groups(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with `group` and `seed` columns: each point its own group of seed 0 where they are missing."""
    runs = runs.copy()
    if "group" not in runs:
        runs["group"] = runs["point"]
    if "seed" not in runs:
        runs["seed"] = 0
    return runs


def chance_level(runs: pd.DataFrame, task: str) -> float | None:
    """The chance accuracy the runs of `task` logged (`test/TASK/chance`: mean of 1 / choices over the
    questions scored), averaged over the runs that logged it; None when none did."""
    column = f"test/{task}/chance"
    if column not in runs or runs[column].isna().all():
        return None
    return float(runs[column].mean())


def _draw_groups(ax, runs: pd.DataFrame, column: str, offset: float, width: float, color, label: str | None,
                 seeds_label: bool) -> None:
    """One bar per group at x = its index + offset: the mean over seeds, a ±1 SE error bar (n >= 2), a dot per seed."""
    summary = summarize(runs, column)
    x = np.arange(len(summary)) + offset
    bars = ax.bar(x, summary["mean"].fillna(0), width=width, color=color, alpha=0.75, label=label)
    if column.endswith("/ppl"):
        ax.bar_label(bars, labels=[format_mean_se(m) for m in summary["mean"]], fontsize=7, label_type="center")
    spread = summary["se"].notna().to_numpy()
    if spread.any():
        ax.errorbar(x[spread], summary["mean"][spread], yerr=summary["se"][spread], fmt="none", ecolor="black",
                    elinewidth=1, capsize=3, zorder=3)
    for i, group in enumerate(summary["group"]):
        values = runs.loc[runs["group"] == group, column].dropna().to_numpy(dtype=float)
        # the seeds to the right of the error bar, spread a little so equal values stay visible
        jitter = np.linspace(-width / 10, width / 10, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.scatter(x[i] + width / 4 + jitter, values, s=10, color="black", zorder=4, label="seeds" if i == 0 and seeds_label else None)


def metric_bars(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Per task: test perplexity per group; for MCQ tasks also acc and acc_norm, against chance when logged.

    Bars: mean over seeds; error bars: ±1 standard error (only where a group has two or more seeds);
    dots: the individual seeds."""
    runs = with_groups(runs)
    panels = []
    for task, rows in runs.groupby("task", sort=False):
        panels.append((task, rows, [f"test/{task}/ppl"], "perplexity (lower is better)"))
        if f"test/{task}/acc" in rows and rows[f"test/{task}/acc"].notna().any():
            columns = [c for c in (f"test/{task}/acc", f"test/{task}/acc_norm") if c in rows and rows[c].notna().any()]
            panels.append((task, rows, columns, "accuracy (higher is better)"))
    width = max(5.5, 1.6 + 0.9 * max(len(groups(rows)) for _, rows, _, _ in panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.4 * len(panels)), squeeze=False)
    for ax, (task, rows, columns, ylabel) in zip(axes[:, 0], panels):
        names = groups(rows)
        bar = 0.8 / len(columns)
        for j, column in enumerate(columns):
            name = column.rsplit("/", 1)[-1]
            color = group_colors(rows, names) if len(columns) == 1 else f"C{j}"  # one metric: each method its colour
            _draw_groups(ax, rows, column, (j - (len(columns) - 1) / 2) * bar, bar, color, name if len(columns) > 1 else None, j == 0)
        chance = chance_level(rows, task) if ylabel.startswith("accuracy") else None
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", label=f"chance ({chance:.3f})")
        n = rows.groupby("group", sort=False)["seed"].nunique()
        ax.set_xticks(range(len(names)), [f"{short_label(g)}\n(n={n[g]})" for g in names])
        ax.legend(fontsize=7)
        ax.margins(y=0.12)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: {' / '.join(c.rsplit('/', 1)[-1] for c in columns)} (mean over seeds, ±1 SE, dots: seeds)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    return save_figure(fig, out)


def tokens_per_step(runs: pd.DataFrame) -> pd.Series:
    """Pretraining tokens per optimizer step of each run (run_id -> tokens): its final tokens over its final steps."""
    if not {"train/final_tokens", "train/final_steps"} <= set(runs):
        return pd.Series(dtype=float)
    steps = runs["train/final_steps"].where(runs["train/final_steps"] > 0)
    return pd.Series((runs["train/final_tokens"] / steps).to_numpy(), index=runs["run_id"])


def loss_curves(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """Per task: pretraining val/loss against training tokens, one colour per group, one line per seed;
    `curves` is long form (run_id, step, value). Runs that logged no token count stay on optimizer steps.
    Groups that share their pretraining are drawn once (`curve_sets`)."""
    runs = with_groups(runs)
    tasks = list(dict.fromkeys(runs["task"]))
    per_step = tokens_per_step(runs)
    on_tokens = per_step.notna().all() and len(per_step) == len(runs)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(6.5, 3.6 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        rows = runs[runs["task"] == task]
        for label, color, lines in curve_sets(rows, curves, per_step if on_tokens else None):
            for k, (x, y) in enumerate(lines):
                ax.plot(x, y, color=color, marker="o", markersize=3, linewidth=1, alpha=0.8, label=label if k == 0 else None)
        if on_tokens:
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_quantity(v, "")))
        ax.set_xlabel("pretraining tokens" if on_tokens else "optimizer step (pretraining)")
        ax.set_ylabel(f"val/loss ({task} validation, nats/token)")
        ax.set_title(f"{task}: validation loss during pretraining, one line per seed", fontsize=9)
        if ax.get_legend_handles_labels()[0]:  # runs without a validation set log no curve
            ax.legend(fontsize=7)
    return save_figure(fig, out)


def merge_equal(keys: list[str], same: Callable[[str, str], bool]) -> dict[str, list[str]]:
    """`keys` merged where `same`: the first of each set of equal keys -> all of them, in order (one
    selection drawn by several groups, one generalist model every task shares)."""
    merged: dict[str, list[str]] = {}
    for key in keys:
        first = next((k for k in merged if same(k, key)), key)
        merged.setdefault(first, []).append(key)
    return merged


def curve_sets(rows: pd.DataFrame, curves: pd.DataFrame, per_step: pd.Series | None) -> list[tuple[str, str, tuple]]:
    """(label, colour, lines) per group of `rows`, a line (x, val/loss) per run, x in tokens where `per_step`
    (run -> tokens a step) is given, else in steps. Groups with the same lines share one pretraining (CRISP
    and CRISP+FT, the generalist of several tasks): one entry, labelled `a = b`, in the first one's colour."""
    names = groups(rows)
    found: dict[tuple, tuple[list[str], str]] = {}
    for group, color in zip(names, group_colors(rows, names)):
        lines = []
        for _, row in rows[rows["group"] == group].iterrows():
            history = curves[curves["run_id"] == row["run_id"]]
            if len(history):
                history = history.drop_duplicates("step", keep="last").sort_values("step")  # a resumed run may log a step twice
                # logged steps are 0-based: the check at step k follows k + 1 optimizer steps
                x = (history["step"] + 1) * per_step[row["run_id"]] if per_step is not None else history["step"]
                lines.append((tuple(x), tuple(history["value"])))
        if lines:
            found.setdefault(tuple(lines), ([], color))[0].append(short_label(group).replace("\n", ", "))
    return [(" = ".join(labels), color, lines) for lines, (labels, color) in found.items()]


def histograms(tables: dict[str, pd.DataFrame], folder: Path, coverage: dict[str, pd.DataFrame] | None = None,
               tasks: dict[str, str] | None = None) -> tuple[list[Path], dict[str, str]]:
    """For each CRISP selection: P(c|Ds) and P(c|Dg) per cluster, clusters sorted by importance weight; beside
    it, where the point logged its coverage rows, how close specialist and pool text sit to the pool.
    The title names the task (`tasks`: point -> task) and the tree level by its number of clusters.
    Points with the same histogram drew from one selection (CRISP and CRISP+FT, every training budget):
    one figure, named after the first, whose index caption lists them all. Returns the paths and the captions."""
    paths, captions, coverage, tasks = [], {}, coverage or {}, tasks or {}
    shared = merge_equal(list(tables), lambda a, b: tasks.get(a) == tasks.get(b) and tables[a].equals(tables[b]))
    for point, same in shared.items():
        table = tables[point].sort_values("importance_weight", ascending=False)
        rows = coverage.get(point)
        fig, axes = plt.subplots(1, 2 if rows is not None else 1, figsize=(11, 3.4) if rows is not None else (7, 3.4),
                                 squeeze=False, gridspec_kw={"width_ratios": [3, 2]} if rows is not None else None)
        ax = axes[0, 0]
        x = range(len(table))
        ax.bar(x, table["p_specialist"], width=1.0, alpha=0.7, color=METHOD_COLORS["crisp"], label="P(c|Ds) specialist")
        ax.bar(x, table["p_generalist"], width=1.0, alpha=0.5, color=METHOD_COLORS["uniform"], label="P(c|Dg) generalist")
        ax.set_xlabel(f"cluster ({len(table)}), by importance weight w(c) = P(c|Ds) / P(c|Dg)")
        ax.set_ylabel("probability")
        task = tasks.get(point)
        more = f" and {len(same) - 1} more with this selection" if len(same) > 1 else ""
        ax.set_title(f"{task + ': ' if task else ''}tree level of {len(table)} clusters ({short_label(point).replace(chr(10), ', ')}{more})",
                     fontsize=9)
        ax.legend()
        if rows is not None:
            _coverage_panel(axes[0, 1], rows)
        stem = folder / f"histogram-{point.replace('=', '-').replace(',', '_')}"
        paths += save_figure(fig, stem)
        if len(same) > 1:
            captions[f"{stem.name}.png"] = f"{HISTOGRAM_CAPTION}; one selection, drawn by: {', '.join(f'`{p}`' for p in same)}"
    return paths, captions


def _coverage_panel(ax, rows: pd.DataFrame) -> None:
    """Cosine to the nearest pool window: specialist pieces against pool windows (crisp_pl.coverage)."""
    bins = np.linspace(min(0.0, rows["nearest"].min()), 1.0, 41)
    for name, color in (("pool", METHOD_COLORS["uniform"]), ("specialist", METHOD_COLORS["crisp"])):
        values = rows.loc[rows["set"] == name, "nearest"]
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.5, color=color,
                label=f"{name} (median {values.median():.2f})")
        ax.axvline(values.median(), color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("cosine to the nearest pool window")
    ax.set_ylabel("density")
    ax.set_title("coverage: how close the pool comes")
    ax.legend(fontsize=8)


def _quality_columns(task: str) -> dict[str, str]:
    """Metric -> table heading of the quality metrics: mean ± SE per group, paired differences against references."""
    return {f"test/{task}/ppl": "test ppl", f"test/{task}/acc": "acc", f"test/{task}/acc_norm": "acc_norm"}


def _cost_columns(task: str) -> dict[str, str]:
    """Metric -> table heading of what is reported as a plain mean over seeds."""
    return {f"test/{task}/chance": "chance", f"test/{task}/n": "questions", "cost/selection_flops": "selection",
            "cost/selection_hours": "selection time", "cost/train_flops": "training", "cost/total_flops": "total",
            "train/final_tokens": "train tokens", "data/unique_windows": "unique windows", "data/max_repeats": "max repeats",
            "selection/chosen_level": "chosen level"}


UNITS = {"cost/selection_flops": "FLOP", "cost/train_flops": "FLOP", "cost/total_flops": "FLOP",
         "cost/selection_hours": "hours", "cost/train_hours": "hours", "cost/total_hours": "hours",
         "train/final_tokens": ""}  # costs in readable units (analysis.stats.format_quantity)


def _format_cost(column: str, value: float) -> str:
    return format_quantity(value, UNITS[column]) if column in UNITS else format_mean_se(value)


def _present(rows: pd.DataFrame, columns: dict[str, str]) -> dict[str, str]:
    return {c: name for c, name in columns.items() if c in rows and rows[c].notna().any()}


def _seed_list(seeds) -> str:
    return ", ".join(str(s) for s in seeds) or "-"


def group_table(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per group: n seeds, the seeds, quality metrics as mean ± SE, costs and repetition as means."""
    quality, cost = _present(rows, _quality_columns(task)), _present(rows, _cost_columns(task))
    table = pd.DataFrame({"group": groups(rows)})
    seeds = rows.groupby("group", sort=False)["seed"].apply(lambda s: sorted(s.dropna().unique()))
    table["n"] = [len(seeds[g]) for g in table["group"]]
    table["seeds"] = [_seed_list(seeds[g]) for g in table["group"]]
    for column, name in quality.items():
        summary = summarize(rows, column)
        table[name] = [format_mean_se(m, se) for m, se in zip(summary["mean"], summary["se"])]
    for column, name in cost.items():
        table[name] = [_format_cost(column, m) for m in summarize(rows, column)["mean"]]
    return table


def paired_table(rows: pd.DataFrame, task: str, reference: str) -> pd.DataFrame:
    """Every other group minus `reference`, same seed against same seed: n pairs, mean ± SE per quality metric."""
    quality = _present(rows, _quality_columns(task))
    table = None
    for column, name in quality.items():
        diffs = paired_differences(rows, column, reference)
        if table is None:
            table = pd.DataFrame({"group": diffs["group"], "n": diffs["n"], "paired seeds": diffs["seeds"].map(_seed_list)})
            unpaired = diffs["unpaired"].map(_seed_list)
        table[f"{name} Δ"] = [format_mean_se(m, se) for m, se in zip(diffs["mean"], diffs["se"])]
    if table is None:
        return pd.DataFrame()
    table["unpaired seeds (left out)"] = unpaired
    return table


REFERENCES = (("the generalist", "uniform"), ("CRISP", "crisp"))  # (name, method): compared against without fine-tuning


def results_table(runs: pd.DataFrame, out: Path) -> Path:
    """Per task, in markdown: each group's mean ± SE over seeds with its costs; the paired differences of
    every group against the task's generalist and CRISP (same seed against same seed); every run."""
    runs = with_groups(runs)
    sections = []
    for task, rows in runs.groupby("task", sort=False):
        lines = [f"### {task}", "",
                 ("Mean ± standard error over seeds (SE = sample standard deviation / sqrt(n), n = seeds; "
                  "no SE with one seed); costs (FLOP, device time) and repetition are means over seeds."), "",
                 group_table(rows, task).to_markdown(index=False, disable_numparse=True)]  # the text as formatted
        compared: set[frozenset] = set()  # pairs already in a table: not again, sign flipped, against the other
        for name, method in REFERENCES:
            references = reference_groups(rows, method)
            finetuned = [] if references else reference_groups(rows, method, finetuned=True)
            if finetuned:  # a study whose only generalist is fine-tuned: it is the reference
                name, references = f"{name} (fine-tuned)", finetuned
            if not references:
                lines += ["", f"No paired differences against {name}: no `{method}` group on {task}."]
            for reference in references:
                # in a sweep, the methods at the reference's own point of it (same steps, same size); else every group
                own = condition(reference)
                at = rows[rows["group"].map(condition) == own]
                peers = at if own and at["group"].nunique() > 1 else rows
                table = paired_table(peers, task, reference)
                if not table.empty:
                    table = table[[frozenset((g, reference)) not in compared for g in table["group"]]]
                if table.empty:
                    continue
                compared |= {frozenset((g, reference)) for g in table["group"]}
                where = f", at {own}" if peers is at else ""
                lines += ["", f"#### Paired differences against {name} (`{reference}`)", "",
                          (f"Group minus `{reference}`{where}, seed by seed over the seeds both ran (n pairs); mean ± SE of the "
                           "differences. Negative ppl Δ / positive acc Δ: better than the reference. A seed only one "
                           "side has is left out of the pairs and listed."), "",
                          table.to_markdown(index=False, disable_numparse=True)]
        every = {"point": "point", "group": "group", "seed": "seed"} | _present(rows, _quality_columns(task)) | _present(rows, _cost_columns(task))
        order = {g: i for i, g in enumerate(groups(rows))}
        each = rows.sort_values(["group", "seed"], key=lambda s: s.map(order) if s.name == "group" else s, kind="stable")[list(every)]
        for column in list(every)[3:]:
            each[column] = each[column].map(lambda v, c=column: _format_cost(c, float(v)))
        each["seed"] = each["seed"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
        lines += ["", "#### Every run", "", each.rename(columns=every).to_markdown(index=False, disable_numparse=True)]
        sections.append("\n".join(lines))
    if runs["task"].nunique() > 1:
        sections.insert(0, "### Every task\n\nTest quality per task, mean ± SE over seeds (a row: the group without its task).\n\n"
                        + across_tasks(runs).to_markdown(index=False, disable_numparse=True))
    out.write_text("\n\n".join(sections) + "\n")
    return out


def across_tasks(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group with its task left out of the name (`crisp,task=medical` -> `crisp`), one column per
    task and quality metric (test ppl; accuracy for MCQ tasks)."""
    runs = with_groups(runs)
    runs["row"] = runs["group"].map(lambda g: ",".join(p for p in g.split(",") if not p.startswith("task=")) or g)
    table = pd.DataFrame({"group": list(dict.fromkeys(runs["row"]))})
    for task, rows in runs.groupby("task", sort=False):
        for column, name in _present(rows, _quality_columns(task)).items():
            summary = summarize(rows, column).assign(row=lambda f: f["group"].map(dict(zip(rows["group"], rows["row"]))))
            cells = {r.row: format_mean_se(r.mean, r.se) for r in summary.itertuples()}
            table[f"{task} {name}"] = table["group"].map(lambda g: cells.get(g, "-"))
    return table


BY_METHOD = ("variant", "method", "selection.method")  # series whose lines are methods: drawn in the methods' colours
SHARED_COST = {"cost/total_flops": "flops", "cost/total_hours": "hours"}  # total-cost axes a figure may split over K tasks


def sweep_figure(runs: pd.DataFrame, spec: dict, folder: Path) -> list[Path]:
    """A quality metric against a swept quantity, per task: `spec["x"]` is a metric (`data/pool_windows`,
    `selection/clusters`) or a grid-key column, one line per value of `spec["series"]` (default: the
    variant, else the method; a list of columns: one line per combination of their values). With
    `spec["tasks"]` = K > 1, a total-cost axis reads the cost of one of K tasks sharing the pool: its
    task-specific cost plus a K-th of the pool's embedding and tree (and of a continued-pretraining
    base), as the paper counts it. Each marker is a group's mean over seeds with a ±1 SE bar, the dots its
    seeds. Written as PNG and PDF, with a markdown table of the plotted values beside them."""
    runs = with_groups(runs)
    x, series = spec["x"], spec.get("series", "variant")
    stem = folder / f"sweep-{x.replace('/', '_').replace('.', '_')}"
    if spec.get("tasks", 1) > 1:  # the paper's reading: the pool's embedding and tree (and a base) shared by K tasks
        if x not in SHARED_COST or not {f"cost/pool_{SHARED_COST[x]}", f"cost/task_{SHARED_COST[x]}"} <= set(runs):
            return []  # runs logged before costs were split, or not a total-cost axis
        unit, k = SHARED_COST[x], spec["tasks"]
        runs[x] = (runs[f"cost/pool_{unit}"] + runs[f"cost/base_{unit}"].fillna(0)) / k + runs[f"cost/task_{unit}"]
        stem = stem.with_name(f"{stem.name}-{k}_tasks")
    if isinstance(series, list):  # one line per combination (a method at each specialist share)
        columns, series = series, ", ".join(series)
        if set(columns) <= set(runs):
            runs[series] = runs[columns].astype(str).agg(", ".join, axis=1)
    if series not in runs or runs[series].isna().all() or (runs[series] == "").all():
        series = "method"
    panels = [(task, rows, column) for task, rows in runs.groupby("task", sort=False)
              for column in (f"test/{task}/ppl", f"test/{task}/acc") if column in rows and rows[column].notna().any()]
    if x not in runs or not panels:
        return []
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.5, 3.8 * len(panels)), squeeze=False)
    table = []
    for ax, (task, rows, column) in zip(axes[:, 0], panels):
        for k, (name, lines) in enumerate(rows.groupby(series, sort=False, dropna=False)):
            color = method_color(lines["method"].iloc[0], bool(lines["finetune"].iloc[0]) if "finetune" in lines else False, k) \
                if series in BY_METHOD and "method" in lines else f"C{k}"
            summary = summarize(lines, column)
            at = lines.groupby("group", sort=False)[x].mean().reindex(summary["group"]).to_numpy(dtype=float)
            order = np.argsort(at)
            label = str(name) if series in BY_METHOD else f"{series}={name}"
            ax.errorbar(at[order], summary["mean"].to_numpy()[order], yerr=summary["se"].fillna(0).to_numpy()[order],
                        marker="o", color=color, capsize=3, label=label)
            ax.scatter(lines[x], lines[column], s=8, color=color, alpha=0.5)
            if x in UNITS:  # a cost axis: which point of the sweep (the size, the budget) a marker is, it does not say
                for i in order:
                    point = short_label(condition(summary["group"][i])).replace("\n", ", ")
                    ax.annotate(point, (at[i], summary["mean"][i]), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
            table += [{"task": task, "metric": column.rsplit("/", 1)[-1], series: name, "group": summary["group"][i],
                       spec.get("label", x): _format_cost(x, float(at[i])),
                       "n": int(summary["n"][i]), "mean ± SE": format_mean_se(summary["mean"][i], summary["se"][i])}
                      for i in order]
        chance = chance_level(rows, task) if column.endswith("/acc") else None
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", label=f"chance ({chance:.3f})")
        if spec.get("log_x"):
            ax.set_xscale("log")
        if x in UNITS or spec.get("log_x"):
            _ticks_in_units(ax, UNITS.get(x, ""))
        ax.set_xlabel(spec.get("label", x))
        ax.set_ylabel(("test perplexity (lower is better)" if column.endswith("/ppl") else "accuracy (higher is better)"))
        ax.set_title(f"{task}: mean over seeds, ±1 SE, dots: seeds", fontsize=9)
        ax.legend(fontsize=7)
    paths = save_figure(fig, stem)
    markdown = stem.with_name(f"{stem.name}.md")
    markdown.write_text(pd.DataFrame(table).to_markdown(index=False, disable_numparse=True) + "\n")
    return paths + [markdown]


def _ticks_in_units(ax, unit: str) -> None:
    """x ticks read `10 TFLOP`, `5 min`, not `10^13`. On a log axis the 2x and 5x ticks between decades are
    labelled too while it spans under two decades (matplotlib labels every 2x..9x tick, which overlap)."""
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: format_quantity(v, unit)))
    if ax.get_xscale() == "log":
        low, high = ax.get_xlim()

        def minor(v: float, _) -> str:
            leading = round(v / 10 ** math.floor(math.log10(v)), 6)
            return format_quantity(v, unit) if high / low < 100 and leading in (2, 5) else ""
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(minor))


def save_figure(fig, stem: Path) -> list[Path]:
    """`stem.png` and `stem.pdf` (for papers) of `fig`, which is closed; a dot in the stem stays (`histogram-selection.method-crisp`)."""
    fig.tight_layout()
    paths = [stem.with_name(f"{stem.name}.png"), stem.with_name(f"{stem.name}.pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def transfer_matrix(runs: pd.DataFrame, folder: Path) -> list[Path]:
    """Every group against every task its models were scored on (`eval.tasks`): a heat map of the mean
    test perplexity over seeds divided by the generalist's (`uniform`) on the same task, annotated with
    the perplexity, and the same numbers in markdown. Columns: the tasks some other task's models were
    scored on; none (and no file) in a study that scores each model on its own task only. Groups of one
    method whose scores are identical are one model (the generalist every task shares): one row."""
    runs = with_groups(runs)
    tasks = [t for t in dict.fromkeys(runs["task"]) if f"test/{t}/ppl" in runs
             and runs.loc[runs["task"] != t, f"test/{t}/ppl"].notna().any()]
    if not tasks:
        return []
    names = groups(runs)
    ppl = pd.DataFrame({t: summarize(runs, f"test/{t}/ppl").set_index("group")["mean"].reindex(names) for t in tasks})
    uniform = runs[runs["group"].isin(reference_groups(runs, "uniform"))]
    base = pd.Series({t: uniform[f"test/{t}/ppl"].mean() for t in tasks}) if len(uniform) else pd.Series(1.0, index=tasks)
    # one model shared by several groups (the generalist, trained once for every task) scores the same: one row
    trained_for = runs.groupby("group", sort=False)["task"].first()
    rows = {first: [trained_for[n] for n in same]
            for first, same in merge_equal(names, lambda a, b: short_label(a) == short_label(b) and ppl.loc[a].equals(ppl.loc[b])).items()}
    names, ppl = list(rows), ppl.loc[list(rows)]
    labels = [f"{short_label(n)} ({'every task' if len(rows[n]) == trained_for.nunique() > 1 else ', '.join(rows[n])})"
              for n in names]
    ratio = ppl / base
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(tasks), 1.2 + 0.45 * len(names)))
    image = ax.imshow(np.log(ratio.to_numpy(dtype=float)), cmap="RdBu_r", vmin=-0.7, vmax=0.7, aspect="auto")
    for i, j in np.ndindex(ratio.shape):
        if not np.isnan(ppl.iat[i, j]):
            ax.text(j, i, format_mean_se(ppl.iat[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(tasks)), [f"scored on\n{t}" for t in tasks], fontsize=8)
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    fig.colorbar(image, ax=ax, label="log(ppl / generalist's ppl): blue is better")
    ax.set_title("transfer: test perplexity, mean over seeds", fontsize=9)
    paths = save_figure(fig, folder / "transfer")
    table = ppl.map(lambda v: format_mean_se(v)).rename(columns=lambda t: f"ppl on {t}")
    table.insert(0, "group", [n if len(rows[n]) == 1 else label for n, label in zip(names, labels)])
    (folder / "transfer.md").write_text(table.to_markdown(index=False, disable_numparse=True) + "\n")
    return paths + [folder / "transfer.md"]


CAPTIONS = {"results.png": "held-out quality per group: mean over seeds, ±1 SE, dots the seeds",
            "results.md": "per task: mean ± SE per group with costs, paired differences against the generalist and CRISP, every run",
            "val_loss.png": "validation loss against pretraining tokens, one line per seed"}


HISTOGRAM_CAPTION = "the CRISP histogram P(c|Ds) against P(c|Dg)"


def index(folder: Path, paths: list[Path], title: str, description: str, captions: dict[str, str] | None = None) -> Path:
    """`index.md`: the study, the finding it tests (its description), and every figure and table with a caption
    (`captions`: file name -> caption, before the defaults by file name)."""
    lines = [f"# {title}", "", " ".join(description.split()), ""]
    names = {path.name for path in paths}
    captions = {**CAPTIONS, **(captions or {})}
    for path in paths:
        if path.suffix == ".pdf":
            continue  # linked beside its PNG
        caption = captions.get(path.name) or (HISTOGRAM_CAPTION if path.name.startswith("histogram-")
                                              else "every model scored on every task" if path.name.startswith("transfer") else "")
        pdf = path.with_suffix(".pdf").name
        link = f" ([PDF]({pdf}))" if path.suffix == ".png" and pdf in names else ""  # a table has no vector copy
        lines.append(f"- [{path.name}]({path.name}){link}{': ' + caption if caption else ''}")
    out = folder / "index.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def draw(runs: pd.DataFrame, curves: pd.DataFrame, tables: dict[str, pd.DataFrame], folder: Path,
         figures: list[dict] = (), title: str = "", description: str = "",
         coverage: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Every figure and table of one study into `folder`.

    runs: one row per point, in plotting order: point, group, seed, method, task, finetune, run_id and the
    final metrics (without group / seed every point is its own group of one seed).
    curves: val/loss long form: run_id, step, value. tables: CRISP group (or point) -> histogram table;
    coverage: the same keys -> coverage rows (set, nearest, centroid), where logged.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = metric_bars(runs, folder / "results") + loss_curves(runs, curves, folder / "val_loss") + \
        [results_table(runs, folder / "results.md")]
    captions = {}
    for spec in figures:
        drawn = sweep_figure(runs, spec, folder)
        paths += drawn
        captions.update({p.name: f"test quality against {spec.get('label', spec['x'])}: mean over seeds, ±1 SE"
                         for p in drawn if p.suffix != ".md"})
        captions.update({p.name: f"the values drawn in {drawn[0].name}" for p in drawn if p.suffix == ".md"})
    tasks = with_groups(runs).drop_duplicates("group").set_index("group")["task"].to_dict()
    drawn, histogram_captions = histograms(tables, folder, coverage, tasks)
    paths += transfer_matrix(runs, folder) + drawn
    return paths + [index(folder, paths, title or folder.name, description, {**captions, **histogram_captions})]


def draw_study(results) -> list[Path]:
    """`results`: anything with .runs, .curves, .histograms, .folder (and .figures, .description), e.g.
    `StudyRunner.results()`. The folder is replaced whole, once every file is drawn: no figure of a group
    the study no longer has is left in it (nor uploaded with it), and a failed drawing leaves the old set."""
    folder = Path(results.folder)
    staging, old = folder.with_name(f"{folder.name}.partial"), folder.with_name(f"{folder.name}.old")
    for path in (staging, old):
        shutil.rmtree(path, ignore_errors=True)
    paths = draw(results.runs, results.curves, results.histograms, staging, getattr(results, "figures", ()),
                 folder.name, getattr(results, "description", ""), getattr(results, "coverage", None))
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return [folder / path.name for path in paths]
