"""The Lightning wrapper: a built `GPT` plus a `TrainConfig` become a `LightningModule`.

Batches are LongTensor token windows (B, L): the model reads batch[:, :-1] and predicts
batch[:, 1:]. The optimizer is AdamW (betas 0.9 / 0.95, weight decay on matrices only) with a
per-step schedule: linear warmup, then cosine decay to lr * min_lr_ratio at max_steps. Gradient
clipping is the Trainer's (`trainer_kwargs`). A checkpoint holds the GPTConfig, so `load_gpt`
rebuilds the plain network from the file alone.

    >>> module = GPTModule(GPT(GPTConfig.from_name("tiny", block_size=256)), train_config)
    >>> L.Trainer(**trainer_kwargs(train_config)).fit(module, loader)
    >>> gpt = load_gpt("final.ckpt")
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import lightning as L
import torch

from crisp_pl.config import TrainConfig
from crisp_pl.model.gpt import GPT, GPTConfig


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


class GPTModule(L.LightningModule):
    def __init__(self, gpt: GPT, train: TrainConfig):
        super().__init__()
        self.gpt, self.train_config = gpt, train
        # Plain dicts, so the checkpoint loads without pickled classes and load_gpt can rebuild the net.
        self.save_hyperparameters({"gpt_config": dataclasses.asdict(gpt.config), "train": dataclasses.asdict(train)})
        # Training FLOPs per predicted token for full windows (block_size tokens predict block_size - 1);
        # training_step counts with the length it actually sees.
        self.flops_per_token = gpt.flops_per_token(gpt.config.block_size - 1)
        self._flops_at_length = {gpt.config.block_size - 1: self.flops_per_token}  # seq_len -> FLOPs/token
        self.tokens_seen = 0  # predicted tokens over all ranks, kept across resumes by the checkpoint
        self.flops_seen = 0.0

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.gpt(idx, targets)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, L - 1) each
        _, loss = self.gpt(inputs, targets)
        # Every rank sees a batch of the same shape, so the global count needs no communication.
        tokens = targets.numel() * self.trainer.world_size
        self.tokens_seen += tokens
        length = targets.size(1)
        if length not in self._flops_at_length:
            self._flops_at_length[length] = self.gpt.flops_per_token(length)
        self.flops_seen += self._flops_at_length[length] * tokens
        # On-step train/loss is rank 0's (an all-reduce every step is not worth it); lr, tokens and
        # flops are the same on every rank.
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True)
        self.log("train/tokens", float(self.tokens_seen), on_step=True)
        self.log("train/flops", self.flops_seen, on_step=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        _, loss = self.gpt(inputs, targets)
        # batch_size = tokens: the epoch mean (synced over ranks) is weighted by tokens, not by batches.
        self.log("val/loss", loss, batch_size=targets.numel(), on_epoch=True, sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        cfg = self.train_config
        fused = all(p.is_cuda for p in self.gpt.parameters())  # Lightning has moved the model by now
        optimizer = torch.optim.AdamW(param_groups(self.gpt, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95),
                                      fused=fused or None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["crisp_counters"] = {"tokens_seen": self.tokens_seen, "flops_seen": self.flops_seen}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counters = checkpoint.get("crisp_counters", {})
        self.tokens_seen = counters.get("tokens_seen", 0)
        self.flops_seen = counters.get("flops_seen", 0.0)


def trainer_kwargs(train: TrainConfig) -> dict:
    """The `lightning.Trainer` arguments a TrainConfig decides; callers add logger, callbacks, validation."""
    on_cuda = torch.cuda.is_available() and train.accelerator in ("auto", "gpu", "cuda")
    precision = train.precision
    if precision == "auto":
        precision = "bf16-mixed" if on_cuda else "32-true"
    return {
        "max_steps": train.max_steps,
        "gradient_clip_val": train.grad_clip,
        "gradient_clip_algorithm": "norm",
        "precision": precision,
        "accelerator": train.accelerator,
        "devices": train.devices,
        "num_nodes": train.num_nodes,
        "strategy": train.strategy,
        "log_every_n_steps": train.log_every,
        # Deterministic kernels are nearly free on the CPU; on GPU they cost speed (and flash
        # attention's backward has none), so there runs stay seeded but not bitwise reproducible.
        "deterministic": False if on_cuda else "warn",
        "benchmark": False,
    }


def load_gpt(checkpoint_path: str | Path) -> GPT:
    """The plain GPT stored in a checkpoint written by a Trainer fitting a GPTModule (on the CPU, eval mode)."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    if "gpt_config" not in hparams:
        raise ValueError(f"{path}: not a GPTModule checkpoint (no `gpt_config` in its hyper_parameters)")
    gpt = GPT(GPTConfig(**hparams["gpt_config"]))
    # Keys are "gpt.<name>" in the module; "_orig_mod." appears when the GPT was wrapped by torch.compile.
    state = {k.removeprefix("gpt.").replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()
             if k.startswith("gpt.")}
    gpt.load_state_dict(state)
    return gpt.eval()
