"""How many windows a step trains on, and how they are split over devices and gradient accumulation.

With `train.global_batch_tokens` set, a step is that many tokens whatever the hardware (the paper:
about 96k tokens a step): the windows of a step are divided over the world size, and each device
runs as few micro batches of at most `train.batch_size` windows as divide its share evenly. So a
run trains on the same tokens per step, and the same total tokens, on 1, 6 or 64 GPUs. Without it,
a step is `train.batch_size` windows per device, as many devices as there are.

    >>> batch_plan(TrainConfig(global_batch_tokens=98304, batch_size=16), window_length=1024, world=1)
    BatchPlan(micro_batch=16, accumulate=6, world_size=1)      # 96 windows: 6 x 16 on one GPU
    >>> batch_plan(TrainConfig(global_batch_tokens=98304, batch_size=16), window_length=1024, world=64)
    ConfigError: 96 windows a step do not divide over 64 devices ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from crisp_pl.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class BatchPlan:
    micro_batch: int
    """Windows per device per forward pass."""
    accumulate: int
    """Micro batches per optimizer step."""
    world_size: int

    @property
    def windows_per_step(self) -> int:
        return self.micro_batch * self.accumulate * self.world_size

    @property
    def samples_per_rank_step(self) -> int:
        """Windows one rank draws per optimizer step."""
        return self.micro_batch * self.accumulate


def world_size(train: TrainConfig) -> int:
    """Processes the run trains on: devices per node (as Lightning counts them) times nodes."""
    devices = train.devices
    if devices in ("auto", -1, "-1"):
        on_gpu = train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        devices = torch.cuda.device_count() if on_gpu else 1
    elif isinstance(devices, (list, tuple)):
        devices = len(devices)
    elif isinstance(devices, str):
        devices = len(devices.strip(",").split(",")) if "," in devices else int(devices)
    return int(devices) * train.num_nodes


def batch_plan(train: TrainConfig, window_length: int, world: int | None = None) -> BatchPlan:
    world = world or world_size(train)
    if train.global_batch_tokens is None:
        return BatchPlan(train.batch_size, 1, world)
    windows, rest = divmod(train.global_batch_tokens, window_length)
    if rest or windows < 1:
        raise ConfigError(f"train.global_batch_tokens={train.global_batch_tokens} is not a positive multiple of "
                          f"corpus.window_length={window_length}")
    per_device, rest = divmod(windows, world)
    if rest or per_device < 1:
        raise ConfigError(f"train.global_batch_tokens: {windows} windows a step do not divide over {world} devices; "
                          f"use a multiple of {world * window_length} tokens, or another device count")
    accumulate = next(k for k in range(math.ceil(per_device / train.batch_size), per_device + 1) if per_device % k == 0)
    return BatchPlan(per_device // accumulate, accumulate, world)


def planned_draws(train: TrainConfig, window_length: int) -> int:
    """Windows a training stage of `train` draws over all ranks: its steps times the windows of a step."""
    return train.max_steps * batch_plan(train, window_length).windows_per_step
