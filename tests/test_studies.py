"""Every shipped study, end to end at its smallest setting, so none rots: its first seed, every variant and
grid point (a scaling grid: each key's first two values), through the real stages, MLflow and figures, on a corpus and models shrunk by `--set` (the
code path is the study's own: its tasks, methods, tree levels and sweep figures)."""

import dataclasses
import math

import pytest

from crisp_pl import workspace
from crisp_pl.study import StudyRunner, load_study, points

SOURCES = ("[{name: medical, max_docs: 120}, {name: wiki, max_docs: 120}, {name: python_docs, max_docs: 160}, "
           "{name: python_stdlib, max_docs: 6}, {name: bbc_news, max_docs: 30}]")
SHRINK = [
    f"corpus.sources={SOURCES}", "corpus.window_length=64", "corpus.max_chars_per_doc=1500", "corpus.bpe_vocab_size=512",
    "embed.max_seq_length=32", "cluster.levels=[2,4,8,16]", "cluster.niter=4", "model.size=micro",
    "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=0", "train.val_every=2", "train.checkpoint_every=2",
    "finetune.max_steps=2", "finetune.val_every=1", "eval.max_windows=8", "eval.max_questions=8",
    "selection.aux_lm={size: micro, steps: 2, batch_size: 2, max_score_windows: 64}", "selection.doge.level=0",
]


@pytest.fixture(scope="module")
def shared_stages(tmp_path_factory):
    """One stage cache for every study a test worker runs: the studies share the pool's stages (tokenizer,
    windows, embeddings, tree) and the medical task's, as a user's studies given one `cache_dir` do; the
    first study on a worker builds them."""
    return tmp_path_factory.mktemp("stages")


@pytest.mark.slow
# central_claim runs at its own (small) size in tests/test_claim.py
@pytest.mark.parametrize("name", sorted(p.stem for p in workspace.builtin("studies").glob("*.yaml") if p.stem != "central_claim"))
def test_every_study_runs_end_to_end_at_its_smallest_setting(name, tmp_path, shared_stages):
    from analysis.figures import draw_study

    study = load_study(name)
    study = dataclasses.replace(study, seeds=study.seeds[:1])
    if len(points(study)) > 30:  # a scaling grid (split): each key's first two values
        scales = {scale: dict(layer, grid={k: v[:2] for k, v in layer.get("grid", {}).items()})
                  for scale, layer in study.scales.items()}
        study = dataclasses.replace(study, grid={k: v[:2] for k, v in study.grid.items()}, scales=scales)
    laddered = ["train.ladder=0.001"] if "ladder" in study.config.get("train", {}) else []  # a step or two a size
    runner = StudyRunner(study, "tiny", SHRINK + laddered + [f"results_dir={tmp_path}", f"cache_dir={shared_stages}"])
    rows = runner.run()
    status = runner.status()
    assert len(rows) == len(runner.points) and [r["state"] for r in status] == ["done"] * len(rows)
    assert all(r["ppl"] > 1 and r["seconds"] > 0 for r in status)  # `crisp study status` shows each point's result
    for row, point in zip(rows, runner.points):
        task = point.config.task.name
        assert math.isfinite(row[f"test/{task}/ppl"]), point.name
    names = {p.name for p in draw_study(runner.results())}
    assert {"results.png", "results.md", "index.md"} <= names
    if study.config.get("eval", {}).get("tasks"):
        assert {"transfer.png", "transfer.md"} <= names
    for figure in study.figures:
        stem = "sweep-" + figure["x"].replace("/", "_").replace(".", "_") + (f"-{figure['tasks']}_tasks" if figure.get("tasks", 1) > 1 else "")
        assert {f"{stem}.png", f"{stem}.pdf", f"{stem}.md"} <= names, figure
