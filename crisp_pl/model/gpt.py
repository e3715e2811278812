"""A GPT decoder in one file (nanoGPT style): the language model every selection method trains.

Pre-LayerNorm blocks, causal attention through `F.scaled_dot_product_attention` (flash kernels on
GPU), GELU MLP, learned positions, tied input/output embeddings and GPT-2's initialisation. A plain
`nn.Module`: Lightning stays in `module.py`.

    >>> gpt = GPT(GPTConfig.from_name("micro", block_size=64))
    >>> logits, loss = gpt(idx, targets)          # idx, targets: (B, T) token ids, T <= block_size
    >>> nll = gpt.token_losses(idx, targets)      # (B, T) per-token NLL, for token-weighted perplexity
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    """Decoder blocks."""
    n_head: int
    """Attention heads per block; must divide `n_embd`."""
    n_embd: int
    """Width of the residual stream (d_model)."""
    mlp_hidden: int
    """Hidden width of each block's MLP (4 * n_embd in GPT-2 / GPT-3)."""
    block_size: int = 1024
    """Longest sequence the model accepts (number of learned positions)."""
    vocab_size: int = 50304
    """GPT-2's 50,257 tokens padded up to a multiple of 64, which keeps the output matmul on fast kernels."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches (0 for pretraining)."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers (GPT-2 had them; without is a little faster and no worse)."""

    def __post_init__(self):
        for name in ("n_layer", "n_head", "n_embd", "mlp_hidden", "block_size", "vocab_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_name(cls, name: str, **overrides) -> GPTConfig:
        """The named shape from SIZES, with fields replaced by `overrides` (e.g. block_size=256)."""
        if name not in SIZES:
            raise ValueError(f"unknown GPT size {name!r} (known: {', '.join(SIZES)})")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown GPTConfig field {unknown[0]!r} (known: {', '.join(sorted(fields))})")
        return dataclasses.replace(SIZES[name], **overrides)


def padded_vocab_size(n_ids: int, multiple: int = 64) -> int:
    """A tokenizer's id count rounded up to a multiple of 64 (GPT-2's 50,257 -> 50,304, a 4,096-id BPE stays
    4,096): the extra rows are never a target, and the output matmul stays on fast kernels."""
    return -(-n_ids // multiple) * multiple


SIZES: dict[str, GPTConfig] = {
    # micro: unit tests, a few ms a step on a CPU.
    "micro": GPTConfig(n_layer=2, n_head=2, n_embd=64, mlp_hidden=256),
    # mini: the CPU scale (`configs/scales/tiny.yaml`) over its 4,096-id BPE: ~1.1M parameters, about a
    # million training tokens a model; on 2 CPU cores it beats `tiny` at equal time (fewer layers, more tokens).
    "mini": GPTConfig(n_layer=3, n_head=4, n_embd=128, mlp_hidden=512),
    # tiny: ~7M parameters with GPT-2's 50,304-row embedding (1.3M with a 4,096-id BPE).
    "tiny": GPTConfig(n_layer=4, n_head=4, n_embd=128, mlp_hidden=512),
    # small: about an hour on one GPU (`configs/scales/small.yaml`), ~30M parameters.
    "small": GPTConfig(n_layer=6, n_head=6, n_embd=384, mlp_hidden=1536),
    # 124m: GPT-2 small.
    "124m": GPTConfig(n_layer=12, n_head=12, n_embd=768, mlp_hidden=3072),
    # 350m: the paper's model (24 layers, d 1024, 16 heads, MLP 4096, 1024-token context).
    "350m": GPTConfig(n_layer=24, n_head=16, n_embd=1024, mlp_hidden=4096),
    # 1.3b and 6.7b: GPT-3 XL and GPT-3 6.7B shapes (at the paper's 1024-token context).
    "1.3b": GPTConfig(n_layer=24, n_head=16, n_embd=2048, mlp_hidden=8192),
    "6.7b": GPTConfig(n_layer=32, n_head=32, n_embd=4096, mlp_hidden=16384),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, H) -> (B, T, C)


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embeddings
            wpe=nn.Embedding(config.block_size, config.n_embd),  # learned positions
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one (V, C) matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2: each residual branch's output projection is scaled down so the residual stream's
        # variance does not grow with depth (2 branches per block add to it).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _logits(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids -> logits (B, T, V) and the mean NLL over targets != -1 (or None)."""
        logits = self._logits(idx)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def token_losses(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token NLL (B, T) in float32; 0 where targets == -1. Its mean is forward()'s loss."""
        logits = self._logits(idx)  # (B, T, V)
        nll = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1, reduction="none")
        return nll.view(targets.shape)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count. non_embedding=True leaves out the position embeddings only: the token
        embedding stays in because, tied to the output head, it costs a (V x C) matmul per token
        (nanoGPT's convention, and the N of `flops_per_token`)."""
        n = sum(p.numel() for p in self.parameters())  # the tied matrix is counted once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at sequence length `seq_len`:

            6 * N  +  12 * n_layer * n_embd * seq_len

        6N: each parameter does one multiply-add (2 FLOPs) per token in the forward pass and two in the
        backward pass (gradients w.r.t. inputs and weights), N = num_params(non_embedding=True).
        12 * L * d * T: attention scores QK^T and the weighted sum AV, each 2 * d * T FLOPs per token and
        layer forward, times 3 for forward + backward (Kaplan et al. 2020; PaLM appendix B). Causal
        masking's saved half is not subtracted, as in the usual MFU figures.
        """
        c = self.config
        return 6.0 * self.num_params(non_embedding=True) + 12.0 * c.n_layer * c.n_embd * seq_len
