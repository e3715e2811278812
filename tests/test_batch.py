"""A step's token budget is fixed by `train.global_batch_tokens`, whatever the device count."""

import json

import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, TrainConfig, build_run_config, to_dict
from crisp_pl.stages import selection_stage, train_stage
from crisp_pl.training.batch import BatchPlan, batch_plan, world_size

PAPER = TrainConfig(global_batch_tokens=96 * 1024, batch_size=16)


@pytest.mark.parametrize("world, plan", [(1, BatchPlan(16, 6, 1)), (2, BatchPlan(16, 3, 2)), (6, BatchPlan(16, 1, 6)),
                                         (8, BatchPlan(12, 1, 8)), (32, BatchPlan(3, 1, 32))])
def test_the_same_tokens_per_step_on_any_world_size(world, plan):
    got = batch_plan(PAPER, window_length=1024, world=world)
    assert got == plan and got.windows_per_step * 1024 == PAPER.global_batch_tokens


def test_a_micro_batch_never_exceeds_batch_size_and_divides_evenly():
    plan = batch_plan(TrainConfig(global_batch_tokens=10 * 64, batch_size=4), window_length=64, world=1)
    assert plan == BatchPlan(2, 5, 1)  # 10 windows: 3 micro batches of 4 do not divide 10, 5 of 2 do
    assert batch_plan(TrainConfig(batch_size=8), 64, world=3) == BatchPlan(8, 1, 3)  # no global batch: per device


def test_a_budget_that_cannot_be_met_is_a_config_error():
    with pytest.raises(ConfigError, match="multiple of corpus.window_length"):
        batch_plan(TrainConfig(global_batch_tokens=1000), window_length=1024, world=1)
    with pytest.raises(ConfigError, match="do not divide over 64 devices"):
        batch_plan(PAPER, window_length=1024, world=64)


def test_world_size_counts_devices_and_nodes():
    assert world_size(TrainConfig(accelerator="cpu", devices=2, num_nodes=3)) == 6
    assert world_size(TrainConfig(accelerator="cpu", devices=[0, 1])) == 2
    assert world_size(TrainConfig(accelerator="cpu", devices="auto")) == 1


def test_training_accumulates_to_the_global_batch(tiny_config, tiny_prepared):
    cfg = build_run_config(to_dict(tiny_config), {"selection": {"method": "uniform"},
                                                  "train": {"global_batch_tokens": 4 * 64, "batch_size": 2}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    stage = train_stage(cache, cfg, tiny_prepared, selection_stage(cache, cfg, tiny_prepared)).path
    record = json.loads((stage / "train.json").read_text())
    assert record["micro_batch"] == 2 and record["accumulate"] == 2 and record["steps"] == cfg.train.max_steps
    assert record["tokens"] == cfg.train.max_steps * 4 * 63  # the global batch's windows, 63 predicted tokens each
    # validation every val_every optimizer steps (Lightning counts batches: it checked twice as often), 0-based as logged
    checks = [step for step, _ in json.loads((stage / "curves.json").read_text())["val/loss"]]
    assert checks == list(range(cfg.train.val_every - 1, cfg.train.max_steps, cfg.train.val_every))
