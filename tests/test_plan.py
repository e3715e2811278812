"""`crisp study plan`: the stages a point would reuse and compute, read from the real cache without
building anything, and its training FLOPs from the config alone."""

import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.plan import flops_per_second, plan_point
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
