"""Small auxiliary GPTs that selection methods train (CED's two scorers), through the same module,
datamodule and Trainer factory as pretraining, on one device, with no logger and no checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from crisp_pl.config import AuxLMConfig, TrainConfig
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.sampling import Groups
from crisp_pl.training.datamodule import SelectionDataModule
from crisp_pl.training.module import GPTModule
from crisp_pl.training.trainer import build_trainer


def train_aux_lm(store, groups: Groups, cfg: AuxLMConfig, seed: int, root: Path,
                 init: GPT | None = None) -> tuple[GPT, float]:
    """A GPT of shape `cfg.size` trained `cfg.steps` steps on windows drawn from `groups` of `store`;
    with `init`, that GPT is trained further instead (fine-tuned in place).

    `seed` seeds its initialization and its sample stream; the global torch RNG is left as it was.
    Returns the plain GPT (eval mode) and the FLOPs of this training.
    """
    # One device: an auxiliary model this small gains nothing from DDP, and selection runs in one process.
    train = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                        devices=1, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the GPT's initialization
        gpt = init.train() if init is not None else GPT(GPTConfig.from_name(cfg.size, block_size=store.window_length,
                                                                       vocab_size=padded_vocab_size(store.vocab_size)))
        module = GPTModule(gpt, train)
        data = SelectionDataModule(store, groups, batch_size=cfg.batch_size, max_steps=cfg.steps, seed=seed)
        build_trainer(train, root=root).fit(module, datamodule=data)
    return module.gpt.eval(), module.flops_seen
