"""`crisp study plan`: the stages a point would reuse and compute, read from the real cache without
building anything, and its training FLOPs from the config alone."""

import pytest

from crisp_pl.cache import StageCache, is_finished
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.plan import flops_per_second, plan_point, pool_stages
from crisp_pl.stages import run_point


def test_a_plan_reuses_the_cached_stages_computes_the_rest_and_predicts_the_training_flops(tiny_config, tiny_prepared):
    cfg = build_run_config(to_dict(tiny_config), {"selection": {"method": "uniform"}, "train": {"seed": 123}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    before = plan_point("p", cfg, cache.root, done=False)
    assert before.reused[:3] == ["tokenizer", "pool", "task"] and before.computes_from in ("selection", "train")
    trained = len(cache.finished("train"))
    assert trained == len(StageCache(cache.root).finished("train"))  # planning built nothing
    result = run_point(cfg, cache)
    after = plan_point("p", cfg, cache.root, done=False)
    assert after.computes_from is None and {"train", "eval"} <= set(after.reused)
    assert after.train_flops == pytest.approx(result.metrics["train/final_flops"], rel=0.02)  # the config's count is the model's
    assert flops_per_second(cache) > 0


def test_the_pool_stages_are_known_by_key_before_they_exist_and_are_the_keys_a_run_uses(tiny_config, tiny_prepared, tmp_path):
    crisp = build_run_config(to_dict(tiny_config), {"selection": {"method": "crisp"}})
    stages = pool_stages(crisp, f"{crisp.results_dir}/cache")
    assert [name for name, _ in stages] == ["tokenizer", "pool", "pool embeddings", "tree", "pool labels"]
    used = [tiny_prepared.keys[k] for k in ("tokenizer", "pool", "pool_embeddings", "tree", "pool_labels")]
    assert [entry.key for _, entry in stages] == used and all(is_finished(entry.path) for _, entry in stages)
    uniform = build_run_config(to_dict(crisp), {"selection": {"method": "uniform"}})
    assert [name for name, _ in pool_stages(uniform, tmp_path)] == ["tokenizer", "pool"]  # reads no embedding
    elsewhere = pool_stages(crisp, tmp_path)  # an empty cache: the same keys, none built, nothing written
    assert [e.key for _, e in elsewhere] == used and not any(is_finished(e.path) for _, e in elsewhere) and not any(tmp_path.iterdir())
