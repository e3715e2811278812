"""Cross-entropy difference (CED) filter: Moore & Lewis (2010), the CRISP paper's CED baseline.

Two small GPTs are trained: a generalist LM on windows drawn uniformly from the pool, and a
specialist LM on the specialist train windows. By default (`ced.specialist_lm: finetune`) the
specialist LM is the generalist LM fine-tuned on the specialist windows, as contrastive data
selection (Wang et al. 2018) runs CED for LMs: from a few thousand specialist windows, fine-tuning
gives a far better specialist LM than training from scratch (`scratch`, Moore-Lewis' recipe).
With `ced.disjoint_generalist` the generalist LM never sees a window it scores (Moore & Lewis
trained it on a separate sample). A pool window x is scored by

    score(x) = H_generalist(x) - H_specialist(x)        (mean token NLL, nats)

which is the per-token log-likelihood ratio log P_s(x) / P_g(x): high when the specialist LM
explains x better than the generalist one. The top `keep_fraction` of the scored windows are kept
and training draws uniformly from them. With `aux_lm.max_score_windows` only a seeded subset of the
pool is scored (scoring is a forward pass of two LMs over every window) and the selection comes
from that subset alone.

The two LMs are trained through the project's own Trainer path (crisp_pl.training.aux_lm), on
one device, with no logger and no checkpoints; `work_dir` is the Trainer's root folder.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from crisp_pl.progress import bar

from crisp_pl import seeds
from crisp_pl.config import AuxLMConfig, to_dict
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.filtering import filter_groups, kept_count, top_k
from crisp_pl.selection.registry import register


@register("ced", settings=lambda cfg: {"seed": cfg.selection.seed, "ced": to_dict(cfg.selection.ced),
                                       "aux_lm": to_dict(cfg.selection.aux_lm)})
def select(ctx: SelectionContext) -> Groups:
    """One group: the pool windows with the best generalist-minus-specialist LM loss (Moore-Lewis)."""
    ced = ctx.cfg.selection.ced
    groups, scores = ced_groups(ctx.pool, ctx.specialist, ctx.cfg.selection.aux_lm, ced.keep_fraction, ctx.seed,
                                ctx.work_dir, validation_store=ctx.validation, specialist_lm=ced.specialist_lm,
                                disjoint_generalist=ced.disjoint_generalist)
    ctx.artifacts["scores.npy"] = scores
    return groups


def ced_groups(pool_store, specialist_store, cfg: AuxLMConfig, keep_fraction: float, seed: int, work_dir: Path,
               validation_store=None, specialist_lm: str = "finetune",
               disjoint_generalist: bool = False) -> tuple[Groups, np.ndarray]:
    """Keep the top `keep_fraction` of the scored pool windows by cross-entropy difference.

    Returns the one-group selection and (N,) float32 scores, NaN for windows left unscored by
    `max_score_windows`. With a `validation_store`, both LMs' mean loss on it is logged as a check
    that the specialist LM did specialize (not counted in aux_flops / aux_seconds).
    """
    started = time.perf_counter()
    n_pool, n_spec = len(pool_store), len(specialist_store)
    if n_spec == 0:
        raise ValueError("CED needs specialist train windows to train the specialist LM; the specialist set is empty")
    if pool_store.window_length != specialist_store.window_length:
        raise ValueError(f"pool windows have {pool_store.window_length} tokens, "
                         f"specialist windows {specialist_store.window_length}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"aux_lm.steps and aux_lm.batch_size must be >= 1, got {cfg.steps} and {cfg.batch_size}")
    if specialist_lm not in ("finetune", "scratch"):
        raise ValueError(f"ced.specialist_lm must be `finetune` or `scratch`, got {specialist_lm!r}")
    candidates = np.arange(n_pool)
    if cfg.max_score_windows is not None:
        if cfg.max_score_windows < 1:
            raise ValueError(f"aux_lm.max_score_windows must be >= 1 or None, got {cfg.max_score_windows}")
        if cfg.max_score_windows < n_pool:
            candidates = np.sort(seeds.rng(seed, "ced.score_subset").choice(n_pool, cfg.max_score_windows, replace=False))
    if disjoint_generalist and len(candidates) == n_pool:  # score one seeded half, train on the other
        candidates = np.sort(seeds.rng(seed, "ced.score_subset").permutation(n_pool)[: n_pool // 2])
    k = kept_count(keep_fraction, len(candidates))
    work_dir = Path(work_dir)
    from crisp_pl.training.aux_lm import train_aux_lm  # Lightning is imported only when CED runs

    general_windows = np.setdiff1d(np.arange(n_pool), candidates) if disjoint_generalist else np.arange(n_pool)
    if len(general_windows) == 0:
        raise ValueError("ced.disjoint_generalist: every pool window is scored; none is left to train the generalist LM")
    generalist_lm, generalist_flops = train_aux_lm(
        pool_store, Groups.of("pool", general_windows), cfg,
        seeds.stream_seed(seed, "ced.generalist_lm"), work_dir / "generalist_lm")
    init = copy.deepcopy(generalist_lm) if specialist_lm == "finetune" else None
    specialist_lm, specialist_flops = train_aux_lm(specialist_store, Groups.single("train", n_spec), cfg,
                                                   seeds.stream_seed(seed, "ced.specialist_lm"), work_dir / "specialist_lm",
                                                   init=init)
    generalist_loss, specialist_loss = window_losses([generalist_lm, specialist_lm], pool_store, candidates,
                                                     cfg.batch_size, desc="ced scores")
    scores = np.full(n_pool, np.nan, dtype=np.float32)
    scores[candidates] = generalist_loss - specialist_loss
    selected = top_k(scores, candidates, k)

    # Scoring is a forward pass, a third of the training FLOPs per token (GPT.flops_per_token).
    predicted = len(candidates) * (pool_store.window_length - 1)
    forward = sum(lm.flops_per_token(pool_store.window_length - 1) / 3 for lm in (specialist_lm, generalist_lm))
    info = {"kept_windows": k, "keep_fraction": k / len(candidates), "scored_windows": len(candidates),
            "generalist_lm_windows": len(general_windows),
            "aux_flops": specialist_flops + generalist_flops + forward * predicted,
            "aux_seconds": time.perf_counter() - started,
            "score_mean_kept": float(scores[selected].mean()), "score_mean_scored": float(scores[candidates].mean())}
    if validation_store is not None and len(validation_store):
        val = np.arange(len(validation_store))
        general_val, special_val = window_losses([generalist_lm, specialist_lm], validation_store, val, cfg.batch_size,
                                                 desc="ced validation")
        info.update(specialist_lm_val_loss=float(special_val.mean()), generalist_lm_val_loss=float(general_val.mean()))
    return filter_groups(selected, info), scores


@torch.no_grad()
def window_losses(lms: list, store, indices: np.ndarray, batch_size: int, desc: str = "scores") -> list[np.ndarray]:
    """Mean token NLL of each window `indices` of `store` under each LM: one (n,) float64 array per LM."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lms = [lm.to(device).eval() for lm in lms]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    out = [np.empty(len(indices)) for _ in lms]
    for start in bar(range(0, len(indices), batch_size), desc=desc, unit="batch"):
        rows = indices[start:start + batch_size]
        tokens = torch.from_numpy(np.asarray(store.tokens(rows), dtype=np.int64)).to(device)  # (B, L)
        for lm, losses in zip(lms, out, strict=True):
            with autocast:
                nll = lm.token_losses(tokens[:, :-1], tokens[:, 1:])  # (B, L - 1)
            losses[start:start + len(rows)] = nll.double().mean(dim=1).cpu().numpy()
    return out
