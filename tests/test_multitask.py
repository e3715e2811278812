"""A multitask: components split by their own rules, mixed by explicit weights, evaluated per component."""

import numpy as np
import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, build_run_config, to_dict
from crisp_pl.corpus.tasks import load_task_documents, split_task
from crisp_pl.sampling import Groups
from crisp_pl.selection.crisp import histogram

MED = {"name": "med", "sources": ["medical"], "train_fraction": 0.4, "validation_fraction": 0.1, "test_fraction": 0.2}
ARC = {"name": "arc", "sources": ["arc_easy"], "extra_sources": [{"name": "arc_easy", "max_docs": 160}],
       "split": "halves", "validation_fraction": 0.1}
DATA = {
    "corpus": {"window_length": 64, "max_chars_per_doc": 1500,
               "sources": [{"name": "medical", "max_docs": 120}, {"name": "wiki", "max_docs": 150},
                           {"name": "python_stdlib", "max_docs": 8}]},
    "task": {"name": "multi", "components": [MED, ARC], "weights": [3, 1]},
    "embed": {"max_seq_length": 48, "batch_size": 32},
    "cluster": {"levels": [4, 16], "niter": 8},
    "model": {"size": "micro"},
    "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 4, "val_every": 4, "log_every": 2},
    "eval": {"batch_size": 16, "max_windows": 40, "max_questions": 24},
}


def test_components_keep_their_own_splits_and_the_config_is_checked():
    cfg = build_run_config({"task": "multitask"})
    assert [c.name for c in cfg.task.components] == ["medical", "programming", "arc_easy"]
    assert cfg.task.sources == ["medical", "encyclopedic_biology", "programming_qa", "arc_easy"]
    np.testing.assert_allclose(cfg.task.mixture_weights(), [1 / 3] * 3)
    # a single-task preset given after a multitask replaces it (no components left over)
    assert build_run_config({"task": "multitask"}, {"task": "medical"}).task.components == []

    small = {"sources": [{"name": "medical", "max_docs": 300}, {"name": "python_docs", "max_docs": 300},
                         {"name": "wiki", "max_docs": 300}]}
    multi = build_run_config({"task": "multitask", "corpus": small})
    docs = load_task_documents(multi.corpus, multi.task, progress=False)
    mixed = split_task(docs, multi.task)
    for component in ("arc_easy", "medical"):  # each component's splits are exactly its single task's
        alone = build_run_config({"task": component, "corpus": small})
        single = split_task(load_task_documents(alone.corpus, alone.task, progress=False), alone.task)
        for name in ("train", "validation", "test"):
            mine = {d.doc_id for d in mixed[name] if d.source in alone.task.sources or d.domain in alone.task.sources}
            assert mine == {d.doc_id for d in single[name]}, (component, name)
    arc = [d for d in docs if d.source == "arc_easy"]
    assert len([d for d in mixed["test"] if d.source == "arc_easy"]) == len(arc) // 2  # halves, not fractions

    with pytest.raises(ConfigError, match="weights must be 2 positive"):
        build_run_config({"task": {"name": "m", "components": [MED, ARC], "weights": [1, 0]}})
    with pytest.raises(ConfigError, match="share sources"):
        build_run_config({"task": {"name": "m", "components": [MED, dict(MED, name="again")]}})


def test_histogram_weights_mix_components_not_counts():
    pool = np.array([0, 0, 1, 1])
    labels = np.array([0, 0, 0, 1])  # three pieces of task A in cluster 0, one of task B in cluster 1
    np.testing.assert_allclose(histogram(pool, labels, 2).p_specialist, [0.75, 0.25])
    equal = np.array([1 / 6, 1 / 6, 1 / 6, 1 / 2])  # each task's pieces share 1/2
    np.testing.assert_allclose(histogram(pool, labels, 2, specialist_weights=equal).p_specialist, [0.5, 0.5])
    assert histogram(pool, labels, 2, specialist_weights=equal).specialist_counts.tolist() == [3, 1]


def test_a_multitask_point_mixes_by_weight_and_scores_every_component(tmp_path):
    from crisp_pl.stages import prepare, selection_stage
    from crisp_pl.stages.point import run_point

    cfg = build_run_config(DATA, {"results_dir": str(tmp_path), "selection": {"method": "crisp"}})
    cache = StageCache(tmp_path / "cache")
    prepared = prepare(cache, cfg, need_clusters=True)
    table = prepared.stores.train.doc_table
    owner = prepared.train_piece_docs
    component = cfg.task.component_index(table["source"].to_numpy()[owner], table["domain"].to_numpy()[owner])
    assert set(component) == {0, 1}
    level, k = cfg.cluster.level, cfg.cluster.levels[cfg.cluster.level]
    per_task = [np.bincount(prepared.train_labels[component == i, level], minlength=k) for i in (0, 1)]
    expected = 0.75 * per_task[0] / per_task[0].sum() + 0.25 * per_task[1] / per_task[1].sum()
    expected *= np.bincount(prepared.pool_labels[:, level], minlength=k) > 0
    groups = Groups.load(selection_stage(cache, cfg, prepared).path)
    np.testing.assert_allclose(groups.weights, expected / expected.sum())

    specialist_cfg = build_run_config(to_dict(cfg), {"selection": {"method": "specialist"}})
    groups = Groups.load(selection_stage(cache, specialist_cfg, prepared).path)
    train = prepared.stores.train
    np.testing.assert_allclose(groups.weights, [0.75, 0.25])
    for i, members in enumerate(np.split(groups.members, groups.offsets[1:-1])):
        assert (cfg.task.component_index(train.sources[members], train.domains[members]) == i).all()

    metrics = run_point(specialist_cfg, cache).metrics
    parts = {name: metrics[f"test/multi/{name}/ppl"] for name in ("med", "arc")}
    assert min(parts.values()) <= metrics["test/multi/ppl"] <= max(parts.values())
    assert metrics["test/multi/windows"] == metrics["test/multi/med/windows"] + metrics["test/multi/arc/windows"]
    assert 0 <= metrics["test/arc_easy/acc"] <= 1 and metrics["test/arc_easy/chance"] == pytest.approx(0.25, abs=0.02)


def test_a_single_task_keeps_its_cache_keys():
    """Fields added for multitasks leave a single task's stage inputs as they were (no recomputation)."""
    from crisp_pl.stages.data import _task_inputs

    single = _task_inputs(build_run_config({"task": "medical"}))
    assert not {"components", "weights", "train_share", "name", "max_train_windows"} & set(single)
    assert _task_inputs(build_run_config({"task": "multitask"}))["components"][0]["name"] == "medical"
