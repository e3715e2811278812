"""One grid point's stages through the real dispatch: every selection method, fine-tuning, MCQ evaluation, costs."""

import dataclasses
import json

import numpy as np
import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.sampling import Groups
from crisp_pl.selection import get_method, method_names
from crisp_pl.stages import eval_stage, finetune_stage, prepare, selection_cost, selection_stage, train_stage

METHODS = method_names()

FAST_AUX = {"aux_lm": {"steps": 4, "batch_size": 4, "max_score_windows": 120},
            **{f: {"keep_fraction": 0.2} for f in ("ced", "classifier", "dsir")},
            "doge": {"level": 0, "specialist_batch": 4}}


def with_selection(cfg, **selection):
    return build_run_config(to_dict(cfg), {"selection": {**FAST_AUX, **selection}})


@pytest.mark.parametrize("method", METHODS)
def test_every_method_makes_cached_groups_through_the_selection_stage(method, tiny_config, tiny_prepared):
    cfg = with_selection(tiny_config, method=method)
    cache = StageCache(f"{cfg.results_dir}/cache")
    stage = selection_stage(cache, cfg, tiny_prepared)
    groups = Groups.load(stage.path)
    pool, train = tiny_prepared.stores["pool"], tiny_prepared.stores["train"]
    store = train if method == "specialist" else pool
    assert groups.store == ("train" if method == "specialist" else "pool")
    assert groups.members.max() < len(store) and np.isclose(groups.weights.sum(), 1.0)
    if method in ("ced", "classifier", "dsir"):
        assert groups.num_groups == 1 and groups.sizes[0] == groups.info["kept_windows"] > 0
        assert (stage.path / "scores.npy").is_file()
    if method in ("crisp", "doge"):
        assert groups.num_groups == cfg.cluster.levels[cfg.cluster.level if method == "crisp" else 0]
    assert selection_stage(cache, cfg, tiny_prepared) == stage  # cached: the second call builds nothing
    spent = selection_cost(cfg, tiny_prepared, stage, groups.info)
    assert spent.task_seconds >= stage.seconds and (spent.task_flops > 0) == (method not in ("uniform", "specialist", "dsir"))
    reads_pool_embedding = get_method(method).needs_embeddings  # the task-independent part: the pool's embedding and tree
    assert (spent.pool_flops > 0) == reads_pool_embedding and (spent.pool_seconds > 0) == reads_pool_embedding


def test_finetuning_early_stops_and_beats_its_pretrained_model_on_validation(tiny_config, tiny_prepared):
    from crisp_pl.evaluate.perplexity import perplexity
    from crisp_pl.model.checkpoint import load_gpt
    from crisp_pl.stages.data import heldout_windows

    cfg = build_run_config(to_dict(tiny_config), {"selection": {"method": "uniform"},
                                                  "finetune": {"enabled": True, "max_steps": 24, "lr": 1e-3, "val_every": 4, "patience": 2}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    pretrained = train_stage(cache, cfg, tiny_prepared, selection_stage(cache, cfg, tiny_prepared))
    tuned = finetune_stage(cache, cfg, tiny_prepared, pretrained)
    record = json.loads((tuned.path / "train.json").read_text())
    assert 4 <= record["steps"] <= 24 and record["flops"] > 0
    validation = tiny_prepared.stores["validation"]  # the windows early stopping watched: a seeded, stratified sample
    validation = validation.subset(heldout_windows(validation, cfg.eval.max_windows, cfg.task.seed, "eval.validation_windows"))
    before = perplexity(load_gpt(pretrained.path / "final.ckpt"), validation, 16, desc="before")["loss"]
    after = perplexity(load_gpt(tuned.path / "final.ckpt"), validation, 16, desc="after")["loss"]
    assert after < before and abs(after - record["best_val_loss"]) < 1e-3  # final.ckpt is the best checkpoint


@pytest.fixture(scope="module")
def mcq_config(tmp_path_factory):
    """ARC-Challenge as the task, beside a small pool: the halves split and lm-eval on the test half."""
    from conftest import TINY_DATA

    return build_run_config(TINY_DATA, {"task": "arc_challenge", "results_dir": str(tmp_path_factory.mktemp("mcq"))},
                            {"eval": {"max_questions": 40}, "train": {"max_steps": 4}, "selection": {"method": "uniform"}})


def test_mcq_task_is_split_in_halves_and_scored_through_lm_eval(mcq_config):
    cfg = mcq_config
    cache = StageCache(f"{cfg.results_dir}/cache")
    prepared = prepare(cache, cfg)
    test_docs = prepared.stores["test"].doc_table
    train_docs = len(prepared.stores["train"].doc_table) + len(prepared.stores["validation"].doc_table)
    assert len(test_docs) == 1172 // 2 and train_docs == 1172 - 1172 // 2
    assert set(test_docs["source"]) == {"arc_challenge"} and "arc_challenge" not in set(prepared.stores["pool"].sources)
    model = train_stage(cache, cfg, prepared, selection_stage(cache, cfg, prepared))
    metrics = json.loads((eval_stage(cache, cfg, prepared, model).path / "metrics.json").read_text())
    assert metrics["arc_challenge/n"] == 40 and 0 <= metrics["arc_challenge/acc"] <= 1
    assert metrics["arc_challenge/ppl"] > 1 and "arc_challenge/acc_norm_stderr" in metrics
    cfg_tuned = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, max_questions=20))
    assert json.loads((eval_stage(cache, cfg_tuned, prepared, model).path / "metrics.json").read_text())["arc_challenge/n"] == 20
