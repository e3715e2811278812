"""Token-weighted perplexity on held-out windows: the paper's L(D; theta) and exp of it.

Every window contributes all of its predicted tokens, and the loss is the mean NLL over tokens
(not a mean of per-window means), so windows count in proportion to their tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm


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
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
        tokens = torch.from_numpy(np.asarray(store.tokens(list(range(start, min(start + batch_size, n)))), dtype=np.int64)).to(device)
        with autocast:
            nll = gpt.token_losses(tokens[:, :-1], tokens[:, 1:])  # (B, L - 1)
        total_nll += nll.double().sum().item()
        total_tokens += nll.numel()
    loss = total_nll / total_tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": float(total_tokens), "windows": float(n)}
