"""A model ladder: one documented rule that derives a run's batch, learning rate and length from its
model's size, so the model-size study compares sizes at their own sensible settings, not at one
size's hand-tuned ones (as OLMo-core's model ladder does).

With `train.ladder = m` (a multiple of the Chinchilla-optimal duration), for a model of N
non-embedding parameters (attention and MLP weights: n_layer * (4 d^2 + 2 d h)) and windows of L tokens:

- tokens a step:   B = 2048 * 160 * (N / 108M)^(2/3)            (Porian et al. 2024, fitted at 2048-token
                   sequences), as windows of L tokens rounded to a power of two (so they divide over
                   any power-of-two device count), at least one;
- peak lr:         0.0047 * (N / 108M)^(-1/3)                    (the same fit), capped at LR_CAP: the fit
                   was made above ~5M parameters, and CPU-scale models diverge at what it gives them;
- steps:           m * 20 * N tokens (20 tokens a parameter) over the predicted tokens a step;
- warmup:          5% of the steps.

They replace `train.global_batch_tokens`, `lr`, `max_steps` and `warmup_steps`.
"""

from __future__ import annotations

import dataclasses
import math

from crisp_pl.config import RunConfig
from crisp_pl.model.gpt import GPTConfig

TOKENS_PER_PARAM = 20
REFERENCE_PARAMS = 108e6
LR_CAP = 6e-3  # the tiny scale's own peak lr, the largest a 2-core CPU's models were found to train at


def non_embedding_params(config: GPTConfig) -> int:
    return config.n_layer * (4 * config.n_embd**2 + 2 * config.n_embd * config.mlp_hidden)


def apply_ladder(cfg: RunConfig) -> RunConfig:
    """`cfg` with the ladder's training settings when `train.ladder` is set (module docstring), else `cfg`."""
    multiple = cfg.train.ladder
    if multiple is None:
        return cfg
    n = non_embedding_params(GPTConfig.from_name(cfg.model.size))
    length = cfg.corpus.window_length
    windows = 2 ** max(0, round(math.log2(max(1.0, 2048 * 160 * (n / REFERENCE_PARAMS) ** (2 / 3) / length))))
    steps = max(1, math.ceil(multiple * TOKENS_PER_PARAM * n / (windows * (length - 1))))
    train = dataclasses.replace(cfg.train, global_batch_tokens=windows * length, max_steps=steps,
                                lr=min(LR_CAP, 0.0047 * (n / REFERENCE_PARAMS) ** (-1 / 3)),
                                warmup_steps=max(1, round(0.05 * steps)))
    return dataclasses.replace(cfg, train=train)
