"""Classifier filter: keep the pool windows a specialist-vs-generalist classifier finds most specialist.

The CRISP paper's classifier baseline (Grangier et al., ICLR 2025, section 4; in the line of
Gururangan et al. 2020 and Brown et al. 2020's quality filter): logistic regression on the SBERT
embeddings, the specialist train documents' pieces as positives (1) and a seeded sample of generalist pool
windows as negatives (0), each class weighing half of the loss so the class sizes do not matter.
Every pool window is scored by its logit and the top `keep_fraction` are kept (the paper keeps
2.5%). Training draws uniformly from the kept windows.

The model is fitted in torch (float32, full-batch L-BFGS), on the GPU when there is one. A first
fit on 80% of the examples gives a held-out AUC; the fit that scores the pool sees all of them.
Note the negatives are pool windows, which hold in-domain windows too, so the held-out AUC is
bounded by how much of the pool is already specialist-like.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from crisp_pl import seeds
from crisp_pl.config import ClassifierConfig, to_dict
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.filtering import filter_groups, kept_count, top_k
from crisp_pl.selection.registry import register

HELDOUT_FRACTION = 0.2
SCORE_BATCH = 65536  # pool rows converted to float32 at a time


@register("classifier", needs={"embeddings"},
          settings=lambda cfg: {"seed": cfg.selection.seed, "classifier": to_dict(cfg.selection.classifier)})
def select(ctx: SelectionContext) -> Groups:
    """One group: the pool windows an SBERT logistic regression finds most specialist-like."""
    cfg = ctx.cfg.selection.classifier
    groups, scores = classifier_groups(ctx.pool_embeddings, ctx.specialist_embeddings, cfg, cfg.keep_fraction, ctx.seed)
    ctx.artifacts["scores.npy"] = scores
    return groups


def classifier_groups(pool_embeddings: np.ndarray, specialist_embeddings: np.ndarray, cfg: ClassifierConfig,
                      keep_fraction: float, seed: int) -> tuple[Groups, np.ndarray]:
    """Keep the top `keep_fraction` pool windows by classifier logit.

    pool_embeddings (N, D), specialist_embeddings (P, D): unit-norm SBERT rows (fp16 is fine).
    Returns the one-group selection and the (N,) float32 logits (higher = more specialist-like).
    """
    started = time.perf_counter()
    n_pool, n_pos = len(pool_embeddings), len(specialist_embeddings)
    k = kept_count(keep_fraction, n_pool)
    if n_pos == 0:
        raise ValueError("the classifier needs specialist train windows as positives; the specialist set is empty")
    if pool_embeddings.shape[1:] != specialist_embeddings.shape[1:]:
        raise ValueError(f"pool embeddings {pool_embeddings.shape} and specialist embeddings "
                         f"{specialist_embeddings.shape} differ in width")
    if cfg.max_negatives < 1 or cfg.steps < 1:
        raise ValueError(f"classifier.max_negatives and classifier.steps must be >= 1, got {cfg.max_negatives} and {cfg.steps}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dim = pool_embeddings.shape[1]

    negatives = np.sort(seeds.rng(seed, "classifier.negatives").choice(n_pool, size=min(cfg.max_negatives, n_pool), replace=False))
    x = torch.from_numpy(np.concatenate([np.asarray(specialist_embeddings, np.float32),
                                         np.asarray(pool_embeddings[negatives], np.float32)])).to(device)  # (P + M, D)
    y = torch.cat([torch.ones(n_pos), torch.zeros(len(negatives))]).to(device)

    info = {"positives": n_pos, "negatives": len(negatives)}
    evaluations = 0  # loss + gradient evaluations over all fits, for the FLOP count
    held = _heldout_mask(y.cpu().numpy(), seed)
    if held is not None:  # both classes have enough examples to hold some out
        held = torch.from_numpy(held).to(device)
        w, b, used = _fit(x[~held], y[~held], cfg)
        evaluations += used * int((~held).sum())
        with torch.no_grad():
            info["heldout_auc"] = _auc((x[held] @ w + b).cpu().numpy(), y[held].cpu().numpy())
    w, b, used = _fit(x, y, cfg)
    evaluations += used * len(y)
    with torch.no_grad():
        info["train_accuracy"] = float(((x @ w + b > 0).float() == y).float().mean())
    scores = _logits(pool_embeddings, w, b)  # (N,)

    selected = top_k(scores, np.arange(n_pool), k)
    # Per example, a loss + gradient evaluation is a forward dot product (2D FLOPs) and the weight
    # gradient (2D); scoring is one forward pass per pool window.
    info.update(kept_windows=k, keep_fraction=k / n_pool, aux_flops=4.0 * dim * evaluations + 2.0 * dim * n_pool,
                aux_seconds=time.perf_counter() - started)
    return filter_groups(selected, info), scores


def _fit(x: torch.Tensor, y: torch.Tensor, cfg: ClassifierConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Class-balanced, L2-penalized logistic regression by full-batch L-BFGS.

    Returns the weights (D,), the bias () and the number of loss + gradient evaluations.
    """
    n_pos = y.sum()
    # Each class carries half the loss whatever its size (class-balanced weights).
    example_weight = torch.where(y > 0, 0.5 / n_pos, 0.5 / (len(y) - n_pos))
    w = torch.zeros(x.shape[1], device=x.device, requires_grad=True)
    b = torch.zeros((), device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=cfg.steps, line_search_fn="strong_wolfe")
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none") * example_weight).sum()
        loss = loss + 0.5 * cfg.l2 * w.square().sum()  # the bias is not penalized
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach(), evaluations


@torch.no_grad()
def _logits(embeddings: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """x @ w + b for every row, converted to float32 a batch at a time: (N,) float32."""
    return np.concatenate([(torch.from_numpy(np.asarray(embeddings[i:i + SCORE_BATCH], np.float32)).to(w.device) @ w + b).cpu().numpy()
                           for i in range(0, len(embeddings), SCORE_BATCH)])


def _heldout_mask(y: np.ndarray, seed: int) -> np.ndarray | None:
    """A stratified held-out share of each class (None when a class has under 5 examples)."""
    rng = seeds.rng(seed, "classifier.heldout")
    held = np.zeros(len(y), dtype=bool)
    for label in (0, 1):
        members = np.flatnonzero(y == label)
        if len(members) < 5:
            return None
        held[rng.choice(members, size=max(1, int(HELDOUT_FRACTION * len(members))), replace=False)] = True
    return held


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties count one half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y > 0].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
