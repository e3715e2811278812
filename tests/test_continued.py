"""Continued pretraining (the Optimal Splitting recipe): warmup-stable-decay bases that share their
stable phase, and a point that specializes a base, on the shared tiny dataset."""

import time

import pytest
import torch

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, build_run_config, to_dict
from crisp_pl.model.checkpoint import load_gpt
from crisp_pl.stages import TrainRecord, base_stage, run_point
from crisp_pl.stages.training import _fit_on_pool, base_train_config
from crisp_pl.training.schedule import lr_factor


def test_wsd_is_flat_until_its_decay_and_independent_of_the_run_length_before_it():
    assert lr_factor(80, 0, 100, 0.0, "wsd", 0.2) == 1.0
    assert lr_factor(85, 0, 100, 0.0, "wsd", 0.2) == pytest.approx(0.5)  # 1 - sqrt(5 / 20)
    assert lr_factor(100, 0, 100, 0.1, "wsd", 0.2) == pytest.approx(0.1)
    assert [lr_factor(s, 5, 100, 0.1, "wsd", 0.2) for s in range(80)] == [lr_factor(s, 5, 400, 0.1, "wsd", 0.2) for s in range(80)]
    assert lr_factor(0, 5, 100, 0.1, "wsd", 0.2) == pytest.approx(0.2)  # the warmup is the cosine schedule's
    with pytest.raises(ConfigError, match="base.schedule"):
        build_run_config({"base": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="base.steps > 0"):
        build_run_config({"train": {"max_steps": 0}})


def _weights(path):
    return load_gpt(path / "final.ckpt").state_dict()


def _assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _with(cfg, **layer):
    return build_run_config(to_dict(cfg), layer)


def test_wsd_bases_share_one_stable_run_and_equal_uninterrupted_runs(tiny_config, tiny_prepared, tmp_path):
    cache = StageCache(tmp_path / "cache")
    short = _with(tiny_config, base={"steps": 10, "decay_fraction": 0.2})  # stable 8 steps + decay 2
    long = _with(tiny_config, base={"steps": 15, "decay_fraction": 0.2})  # stable 12 steps + decay 3
    short_base, long_base = base_stage(cache, short, tiny_prepared), base_stage(cache, long, tiny_prepared)
    stable = sorted((inputs["steps"], TrainRecord.load(entry)) for entry, inputs in cache.finished("stable"))
    assert [(steps, record.start_step) for steps, record in stable] == [(8, None), (12, 8)]  # 12 went on from 8
    assert TrainRecord.load(long_base).start_step == 12 and TrainRecord.load(long_base).steps == 15
    assert TrainRecord.load(long_base).tokens == 15 * 4 * 63  # counters carried over both continuations
    for cfg, base in ((short, short_base), (long, long_base)):  # bit for bit the run that never stopped
        direct = tmp_path / f"direct{cfg.base.steps}"
        direct.mkdir()
        _fit_on_pool(cfg, tiny_prepared, base_train_config(cfg), direct, None, time.perf_counter())
        _assert_same_weights(_weights(base.path), _weights(direct))
    assert base_stage(cache, long, tiny_prepared) == long_base  # cached


def test_a_point_specializes_a_shared_base_and_counts_its_cost_apart(tiny_config):
    cache = StageCache(f"{tiny_config.results_dir}/cache")
    results = {}
    for method, steps, lr in (("crisp", 4, 1e-3), ("specialist", 4, 1e-3), ("crisp", 4, 1e-12), ("crisp", 0, 1e-3)):
        cfg = _with(tiny_config, base={"steps": 6, "lr": 1e-3}, selection={"method": method}, train={"max_steps": steps, "lr": lr})
        results[method, steps, lr] = run_point(cfg, cache)
    assert len(cache.finished("base")) == 1  # every method and D′ specialized the one base
    base = cache.finished("base")[0][0]
    crisp = results["crisp", 4, 1e-3].metrics
    assert crisp["base/steps"] == 6 and crisp["base/tokens"] == 6 * 4 * 63 and crisp["train/final_tokens"] == 4 * 4 * 63
    assert crisp["cost/base_flops"] == crisp["base/flops"] > 0
    assert crisp["cost/total_flops"] == pytest.approx(crisp["cost/selection_flops"] + crisp["cost/base_flops"] + crisp["cost/train_flops"])
    # the specialization starts from the base's weights: at a vanishing lr it stays there
    still = _weights(cache.path("train", results["crisp", 4, 1e-12].keys["train"]))
    assert all(torch.allclose(still[k], w, atol=1e-6) for k, w in _weights(base.path).items())
    # D′ = 0: the base itself is the evaluated model
    zero = results["crisp", 0, 1e-3]
    assert zero.keys["model"] == base.key and "train/final_tokens" not in zero.metrics
    assert zero.metrics["test/medical/loss"] > crisp["test/medical/loss"]  # 4 steps on the specialist's clusters help
