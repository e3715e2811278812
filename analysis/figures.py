"""Figures and tables of a study, read back from the MLflow store (never from the cache).

For each study: a bar chart of the held-out specialist perplexity per point, the validation loss
curves against training tokens, the CRISP histograms P(c|Ds) against P(c|Dg), and a markdown
table; all under results/figures/STUDY-SCALE/. Metric names match MLflow's (`test/TASK/ppl`).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on these machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def study_runs(runner) -> pd.DataFrame:
    """One row per finished point of the study's current parent run: params, metrics, tags."""
    parent = runner.parent(create=False)
    if parent is None:
        raise LookupError(f"study {runner.study.name} [{runner.scale}] has no runs with this config in {runner.uri}; "
                          f"run it first (crisp study run {runner.study.name} --scale {runner.scale})")
    runs = runner.client.search_runs([runner.experiment], f"tags.`crisp.parent` = '{parent.info.run_id}' and attributes.status = 'FINISHED'")
    rows = [{"point": r.data.tags.get("crisp.point"), "method": r.data.tags.get("crisp.method"), "task": r.data.tags.get("crisp.task"),
             "run_id": r.info.run_id, **r.data.metrics} for r in runs]
    order = {p.name: i for i, p in enumerate(runner.points)}
    return pd.DataFrame(rows).sort_values("point", key=lambda s: s.map(order)).reset_index(drop=True)


def short_label(point: str) -> str:
    """`selection.method=crisp,train.lr=0.001` -> `crisp\n0.001`: the grid values, one per line."""
    return "\n".join(part.split("=", 1)[-1] for part in point.split(","))


def grid_keys(point: str) -> str:
    return ", ".join(part.split("=", 1)[0] for part in point.split(","))


def ppl_bars(runs: pd.DataFrame, out: Path) -> Path:
    task = runs["task"].iloc[0]
    column = f"test/{task}/ppl"
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(runs), 3.6))
    bars = ax.bar(runs["point"].map(short_label), runs[column], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f")
    ax.margins(y=0.12)
    ax.set_xlabel(grid_keys(runs["point"].iloc[0]))
    ax.set_ylabel(f"{column} (lower is better)")
    ax.set_title(f"held-out {task} perplexity")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def loss_curves(runner, runs: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for _, row in runs.iterrows():
        history = runner.client.get_metric_history(row["run_id"], "val/loss")
        if history:
            points = sorted({m.step: m.value for m in history}.items())  # a resumed run may log a step twice
            ax.plot(*zip(*points), marker="o", label=short_label(row["point"]).replace("\n", ", "))
    ax.set_xlabel("optimizer step (every point trains on the same tokens per step)")
    ax.set_ylabel("val/loss (specialist validation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def histograms(runner, runs: pd.DataFrame, folder: Path) -> list[Path]:
    """For each CRISP point: P(c|Ds) and P(c|Dg) per cluster, clusters sorted by importance weight."""
    paths = []
    for _, row in runs[runs["method"] == "crisp"].iterrows():
        text = runner.client.download_artifacts(row["run_id"], "histogram.csv")
        table = pd.read_csv(io.StringIO(Path(text).read_text())).sort_values("importance_weight", ascending=False)
        fig, ax = plt.subplots(figsize=(7, 3.4))
        x = range(len(table))
        ax.bar(x, table["p_specialist"], width=1.0, alpha=0.7, label="P(c|Ds) specialist")
        ax.bar(x, table["p_generalist"], width=1.0, alpha=0.5, label="P(c|Dg) generalist")
        ax.set_xlabel("cluster, by importance weight w(c) = P(c|Ds) / P(c|Dg)")
        ax.set_ylabel("probability")
        ax.set_title(row["point"])
        ax.legend()
        fig.tight_layout()
        path = folder / f"histogram-{row['point'].replace('=', '-').replace(',', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def results_table(runs: pd.DataFrame, out: Path) -> Path:
    task = runs["task"].iloc[0]
    columns = {"point": "point", f"test/{task}/ppl": "test ppl", f"test/{task}/loss": "test loss", "train/final_tokens": "train tokens",
               "train/final_flops": "train FLOPs", "data/unique_windows": "unique windows", "data/max_repeats": "max repeats",
               "train/final_train_seconds": "train s"}
    table = runs[[c for c in columns if c in runs]].rename(columns=columns)
    out.write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return out


def draw_study(runner) -> list[Path]:
    runs = study_runs(runner)
    folder = runner.results_dir / "figures" / f"{runner.study.name}-{runner.scale}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [ppl_bars(runs, folder / "ppl.png"), loss_curves(runner, runs, folder / "val_loss.png"), results_table(runs, folder / "results.md")]
    return paths + histograms(runner, runs, folder)
