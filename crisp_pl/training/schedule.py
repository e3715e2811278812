"""The optimizer's schedule and parameter groups: plain functions, shared by every training loop
(the Lightning module, and DoGE's hand-written proxy loop)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float, schedule: str = "cosine",
              decay_fraction: float = 0.2) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based).

    Linear warmup (step + 1) / warmup_steps, so step 0 already moves and step warmup_steps - 1 is at
    the peak; then, by `schedule`:

    - `cosine`: from 1 at step warmup_steps down to min_lr_ratio at max_steps, flat after.
      E.g. warmup 10, max 110, ratio 0.1: step 0 -> 0.1, step 9 -> 1.0, step 10 -> 1.0, 60 -> 0.55, 110 -> 0.1.
    - `wsd` (warmup-stable-decay): 1 until the decay starts at max_steps - round(decay_fraction * max_steps),
      then 1 - sqrt(progress) down to min_lr_ratio at max_steps (the cooldown Hägele et al. 2024 found
      best). Before its decay the factor does not depend on max_steps, which is what lets runs of
      several lengths share their stable phase. E.g. max 100, fraction 0.2, ratio 0: step 80 -> 1.0,
      85 -> 0.5, 100 -> 0.
    - `constant`: 1 (a stable phase on its own, continued later by a `wsd` decay).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if step >= max_steps:
        return min_lr_ratio
    if schedule == "wsd":
        decay_start = stable_steps(max_steps, decay_fraction)
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / (max_steps - decay_start)  # in [0, 1)
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - math.sqrt(progress))
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # in [0, 1)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stable_steps(max_steps: int, decay_fraction: float) -> int:
    """Steps of a `wsd` run before its decay begins."""
    return max_steps - round(decay_fraction * max_steps)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's rule: parameters with dim >= 2 (matmul weights and embeddings) decay; LayerNorm
    weights and biases do not. Tied parameters appear once."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
