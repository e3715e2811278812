"""Token-weighted perplexity on held-out windows: the paper's L(D; theta) and exp of it.

Every window contributes all of its predicted tokens, and the loss is the mean NLL over tokens
(not a mean of per-window means), so windows count in proportion to their tokens.
`unigram_perplexity` scores the same positions with add-one smoothed token frequencies: the number
a model that learned nothing beyond token counts would reach.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from crisp_pl.progress import bar


@torch.no_grad()
def perplexity(gpt: torch.nn.Module, store, batch_size: int = 16, max_windows: int | None = None,
               device: str | torch.device | None = None, progress: bool = True, desc: str = "perplexity") -> dict[str, float]:
    """Return {"loss", "ppl", "tokens", "windows"} of `gpt` on the windows of `store`."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpt = gpt.to(device).eval()
    n = len(store) if max_windows is None else min(max_windows, len(store))
    if n == 0:
        raise ValueError("no windows to evaluate")
    total_nll, total_tokens = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for start in bar(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
        tokens = torch.from_numpy(np.asarray(store.tokens(list(range(start, min(start + batch_size, n)))), dtype=np.int64)).to(device)
        with autocast:
            nll = gpt.token_losses(tokens[:, :-1], tokens[:, 1:])  # (B, L - 1)
        total_nll += nll.double().sum().item()
        total_tokens += nll.numel()
    loss = total_nll / total_tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": float(total_tokens), "windows": float(n)}


def unigram_counts(store, vocab_size: int, chunk_windows: int = 65536) -> np.ndarray:
    """(vocab_size,) int64: how often each id occurs among every token of `store` (a bincount, chunk by chunk)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(store), chunk_windows):
        tokens = store.tokens(np.arange(start, min(start + chunk_windows, len(store))))
        counts += np.bincount(tokens.ravel(), minlength=vocab_size)[:vocab_size]
    return counts


def unigram_perplexity(counts: np.ndarray, store, max_windows: int | None = None) -> dict[str, float]:
    """`perplexity`'s numbers for a unigram model: every predicted position of the same windows (each
    window's tokens after its first) scored by add-one smoothed frequencies `counts` (e.g. the pool's,
    from `unigram_counts`), P(t) = (counts[t] + 1) / (sum(counts) + V). The baseline a LM must beat."""
    n = len(store) if max_windows is None else min(max_windows, len(store))
    if n == 0:
        raise ValueError("no windows to evaluate")
    logp = np.log(counts.astype(np.float64) + 1.0) - np.log(float(counts.sum()) + len(counts))
    total_nll, total_tokens = 0.0, 0
    for start in range(0, n, 4096):
        targets = store.tokens(np.arange(start, min(start + 4096, n)))[:, 1:]  # (B, L - 1), as the model's targets
        total_nll -= float(logp[targets].sum())
        total_tokens += targets.size
    loss = total_nll / total_tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": float(total_tokens), "windows": float(n)}
