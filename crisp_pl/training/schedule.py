"""The optimizer's schedule and parameter groups: plain functions, shared by every training loop
(the Lightning module, and DoGE's hand-written proxy loop)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based).

    Linear warmup (step + 1) / warmup_steps, so step 0 already moves and step warmup_steps - 1 is at
    the peak; then cosine from 1 at step warmup_steps down to min_lr_ratio at max_steps, flat after.
    E.g. warmup 10, max 110, ratio 0.1: step 0 -> 0.1, step 9 -> 1.0, step 10 -> 1.0, 60 -> 0.55, 110 -> 0.1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # in [0, 1)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's rule: parameters with dim >= 2 (matmul weights and embeddings) decay; LayerNorm
    weights and biases do not. Tied parameters appear once."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
