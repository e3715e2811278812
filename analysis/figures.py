"""Figures and tables of a study, drawn from DataFrames (read back from MLflow by the caller).

For each study: per task, a bar chart of the held-out specialist perplexity per point (and of
multiple-choice accuracy for MCQ tasks, with chance marked), the validation loss curves, the CRISP
histograms P(c|Ds) against P(c|Dg), and a markdown table with every point's selection and
training cost; all in one folder (the runner picks results/figures/STUDY-SCALE/). Metric names
match MLflow's (`test/TASK/ppl`, `test/arc_easy/acc`, `cost/selection_flops`).

This module knows nothing of MLflow or the study runner: `crisp figures` hands it
`StudyRunner.results()`, and any DataFrames of the same columns draw the same way.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on these machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def short_label(point: str) -> str:
    """`selection.method=crisp,train.lr=0.001` -> `crisp\n0.001`: the point's values, one per line (the task left out)."""
    parts = [part for part in point.split(",") if not part.startswith("task=")]
    return "\n".join(part.split("=", 1)[-1] for part in parts) or point


CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "mmlu": 0.25, "sciq": 0.25}  # 4 choices each


def metric_bars(runs: pd.DataFrame, out: Path) -> Path:
    """Per task: test perplexity per point; for MCQ tasks also acc and acc_norm against chance."""
    panels = []
    for task, group in runs.groupby("task", sort=False):
        panels.append((task, group, f"test/{task}/ppl", "perplexity (lower is better)"))
        if f"test/{task}/acc" in group and group[f"test/{task}/acc"].notna().any():
            panels.append((task, group, f"test/{task}/acc", "accuracy (higher is better)"))
    width = 1.6 + 0.9 * max(len(g) for _, g, _, _ in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.2 * len(panels)), squeeze=False)
    for ax, (task, group, column, ylabel) in zip(axes[:, 0], panels):
        labels = group["point"].map(short_label)
        if column.endswith("/acc"):
            x = range(len(group))
            ax.bar([i - 0.2 for i in x], group[column], width=0.4, label="acc")
            ax.bar([i + 0.2 for i in x], group[f"test/{task}/acc_norm"], width=0.4, label="acc_norm")
            ax.axhline(CHANCE.get(task, 0.25), color="gray", linestyle="--", label="chance")
            ax.set_xticks(list(x), labels)
            ax.legend(fontsize=8)
        else:
            ax.bar_label(ax.bar(labels, group[column], color="tab:blue"), fmt="%.1f", fontsize=8)
        ax.margins(y=0.12)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: {column}")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def loss_curves(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> Path:
    """Per task: val/loss against step for each point; `curves` is long form (run_id, step, value)."""
    tasks = list(dict.fromkeys(runs["task"]))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(6.5, 3.6 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        for _, row in runs[runs["task"] == task].iterrows():
            history = curves[curves["run_id"] == row["run_id"]]
            if len(history):
                history = history.drop_duplicates("step", keep="last").sort_values("step")  # a resumed run may log a step twice
                ax.plot(history["step"], history["value"], marker="o", markersize=3, label=short_label(row["point"]).replace("\n", ", "))
        ax.set_xlabel("optimizer step (pretraining and fine-tuning log on their own step counts)")
        ax.set_ylabel(f"val/loss ({task} validation)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def histograms(tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """For each CRISP point: P(c|Ds) and P(c|Dg) per cluster, clusters sorted by importance weight."""
    paths = []
    for point, table in tables.items():
        table = table.sort_values("importance_weight", ascending=False)
        fig, ax = plt.subplots(figsize=(7, 3.4))
        x = range(len(table))
        ax.bar(x, table["p_specialist"], width=1.0, alpha=0.7, label="P(c|Ds) specialist")
        ax.bar(x, table["p_generalist"], width=1.0, alpha=0.5, label="P(c|Dg) generalist")
        ax.set_xlabel("cluster, by importance weight w(c) = P(c|Ds) / P(c|Dg)")
        ax.set_ylabel("probability")
        ax.set_title(point)
        ax.legend()
        fig.tight_layout()
        path = folder / f"histogram-{point.replace('=', '-').replace(',', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def results_table(runs: pd.DataFrame, out: Path) -> Path:
    """One markdown table per task: quality, selection and training cost, data repetition."""
    sections = []
    for task, group in runs.groupby("task", sort=False):
        columns = {"point": "point", f"test/{task}/ppl": "test ppl", f"test/{task}/acc": "acc", f"test/{task}/acc_norm": "acc_norm",
                   f"test/{task}/n": "questions", "cost/selection_flops": "selection FLOPs", "cost/selection_hours": "selection h",
                   "cost/train_flops": "train FLOPs", "cost/total_flops": "total FLOPs", "train/final_tokens": "train tokens",
                   "data/unique_windows": "unique windows", "data/max_repeats": "max repeats"}
        table = group[[c for c in columns if c in group and group[c].notna().any()]].rename(columns=columns)
        sections.append(f"### {task}\n\n" + table.to_markdown(index=False, floatfmt=".4g"))
    out.write_text("\n\n".join(sections) + "\n")
    return out


def draw(runs: pd.DataFrame, curves: pd.DataFrame, tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    """Every figure and table of one study into `folder`.

    runs: one row per point, in plotting order: point, method, task, run_id and the final metrics.
    curves: val/loss long form: run_id, step, value. tables: point -> CRISP histogram table.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [metric_bars(runs, folder / "results.png"), loss_curves(runs, curves, folder / "val_loss.png"),
             results_table(runs, folder / "results.md")]
    return paths + histograms(tables, folder)


def draw_study(results) -> list[Path]:
    """`results`: anything with .runs, .curves, .histograms and .folder, e.g. `StudyRunner.results()`."""
    return draw(results.runs, results.curves, results.histograms, results.folder)
