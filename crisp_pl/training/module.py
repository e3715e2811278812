"""The Lightning wrapper: a built `GPT` plus a `TrainConfig` become a `LightningModule`.

Batches are LongTensor token windows (B, L): the model reads batch[:, :-1] and predicts
batch[:, 1:]. The optimizer is AdamW (betas 0.9 / 0.95, weight decay on matrices only) with a
per-step schedule (`schedule.lr_factor`): linear warmup, then cosine decay to lr * min_lr_ratio at
max_steps, or warmup-stable-decay. Gradient clipping is the Trainer's (`trainer.build_trainer`). A checkpoint holds the
GPTConfig and the tokenizer's spec, so `crisp_pl.model.checkpoint.load_gpt` and `load_tokenizer` rebuild the
plain network and its tokenizer from the file alone.

    >>> module = GPTModule(GPT(GPTConfig.from_name("tiny", block_size=256)), train_config, tokenizer.spec())
    >>> build_trainer(train_config).fit(module, datamodule=data)
    >>> gpt = load_gpt("final.ckpt")
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch

from crisp_pl.config import TrainConfig
from crisp_pl.model.checkpoint import TOKENIZER_KEY
from crisp_pl.model.gpt import GPT
from crisp_pl.training.schedule import lr_factor, param_groups


class GPTModule(L.LightningModule):
    def __init__(self, gpt: GPT, train: TrainConfig, tokenizer: dict | None = None):
        """`tokenizer`: the spec of the tokenizer the windows were written with (None: GPT-2), saved into
        every checkpoint beside the weights (not a hyperparameter: a BPE's spec is too long for a logger)."""
        super().__init__()
        self.gpt, self.train_config, self.tokenizer_spec = gpt, train, tokenizer
        # Plain dicts, so the checkpoint loads without pickled classes and load_gpt can rebuild the net.
        # Not sent to the logger: the run's params are its config, logged once by the tracker (a second
        # copy as `train/lr` clashed when a point pretrains and fine-tunes in one MLflow run).
        self.save_hyperparameters({"gpt_config": dataclasses.asdict(gpt.config), "train": dataclasses.asdict(train)}, logger=False)
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
            optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio, cfg.schedule, cfg.decay_fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["crisp_counters"] = {"tokens_seen": self.tokens_seen, "flops_seen": self.flops_seen}
        if self.tokenizer_spec is not None:
            checkpoint[TOKENIZER_KEY] = self.tokenizer_spec

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counters = checkpoint.get("crisp_counters", {})
        self.tokens_seen = counters.get("tokens_seen", 0)
        self.flops_seen = counters.get("flops_seen", 0.0)
