"""The model ladder: batch, learning rate and length derived from the model's size by one rule."""

import math

from crisp_pl.config import build_run_config
from crisp_pl.model.gpt import SIZES
from crisp_pl.model.ladder import LR_CAP, apply_ladder, non_embedding_params


def laddered(size: str, multiple: float = 1.0, window: int = 1024):
    return apply_ladder(build_run_config({"model": {"size": size}, "corpus": {"window_length": window},
                                          "train": {"ladder": multiple, "lr": 1.0, "max_steps": 7}})).train


def test_the_rule_on_the_paper_model():
    n = non_embedding_params(SIZES["350m"])
    assert n == 24 * (4 * 1024**2 + 2 * 1024 * 4096) == 301_989_888
    train = laddered("350m")
    # 327,680 * (n / 108M)^(2/3) = 651k tokens = 636 windows of 1024 -> the nearest power of two, 512
    assert train.global_batch_tokens == 512 * 1024
    assert train.max_steps == math.ceil(20 * n / (512 * 1023)) and train.warmup_steps == round(0.05 * train.max_steps)
    assert math.isclose(train.lr, 0.0047 * (n / 108e6) ** (-1 / 3))


def test_larger_models_train_longer_on_larger_batches_and_small_ones_are_capped():
    sizes = ["124m", "350m", "1.3b"]
    tokens = [laddered(s).max_steps * laddered(s).global_batch_tokens for s in sizes]
    assert tokens == sorted(tokens) and laddered("1.3b").lr < laddered("124m").lr
    assert laddered("micro", window=256).lr == LR_CAP  # the fit gives ~0.05 to a 98k-parameter model
    assert abs(laddered("mini", 0.5, 256).max_steps - 2 * laddered("mini", 0.25, 256).max_steps) <= 1  # twice the multiple


def test_without_a_ladder_the_config_is_untouched():
    cfg = build_run_config({"train": {"lr": 0.25}})
    assert apply_ladder(cfg) is cfg
