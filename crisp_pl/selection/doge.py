"""DoGE: domain reweighting with generalization estimation (Fan, Pagliardini & Jaggi, ICML 2024),
the out-of-domain variant, as the CRISP paper (Grangier et al., ICLR 2025) runs it as a baseline.

The domains are the K clusters of one coarse tree level of the pool; the target is the specialist
train set. A small proxy GPT trains on the domain mixture alpha (uniform over non-empty clusters at
the start) while alpha follows the target. At each proxy step t, with g_i the gradient of domain
i's mean token loss and g_s that of the specialist batch (flattened over all proxy parameters):

    W_i      = <g_i, g_s> / (|g_i| |g_s|)                         alignment with the target
    alpha_i <- alpha_i * exp(step_size * (lr_t / lr) * W_i) / Z    mirror descent on the simplex
    theta   <- AdamW(theta, sum_i alpha_i g_i)                     the proxy learns the new mixture

and the domain weights returned are the mean of alpha over all T steps (DoGE's averaged weights).
Empty clusters hold weight 0 throughout.

Normalization. The paper's update is alpha_i <- alpha_i exp(eta_t <g_i, g_s> / mu), eta_t the
proxy's learning rate. Its released code clips every domain gradient to norm 1 and divides the dot
products by the mean gradient norm; LM gradients are larger than 1, so what it computes is in
effect the cosine W_i above. We use the cosine directly: it is free of the gradients' scale (which
moves with proxy size and training time), so `step_size` means the same thing for every proxy:
the largest log-weight change of one step at the peak lr (|W_i| <= 1). The factor lr_t / lr keeps
the paper's schedule (small moves during warmup). Budget: the released OOD configs' eta / mu =
5e-4 / 0.05 = 0.01 per step for 10k steps total ~100, as step_size 1 for 100 steps does here.
The code's clipping of negative scores to 0 is not copied (the paper's rule has none).

Per-domain gradients. Each domain's windows get their own forward and backward; W_i is known as
soon as g_i is, so sum_i alpha_i g_i for the *updated* alpha is accumulated on the fly with the
running-max rescaling of an online softmax: memory stays at three gradient copies (g_s, g_i, the
running sum) for any K and no window is passed twice. The alternatives, measured on 2 CPU cores
with K=16 and a micro proxy: one forward on the concatenated batch then one autograd.grad per
domain (retain_graph) runs a full-batch backward per domain, O(K^2): 5.3 s a step against 0.7 s;
torch.func vmap(grad) over domains takes 1.1 s (no batching rule for CPU flash attention) and holds
K gradient copies (K x 3.3M floats for micro).

FLOPs (`aux_flops`): every drawn window, specialist or domain, gets exactly one forward and one
backward, so a step costs GPT.flops_per_token(L - 1) * (L - 1) * (specialist_batch +
non-empty domains * windows_per_domain); the dot products, norms and running sum (~6 FLOPs per
parameter per domain) are left out, (L - 1) times less than one window's forward and backward.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from crisp_pl.progress import bar

from crisp_pl import seeds
from crisp_pl.config import AuxLMConfig, DogeConfig, TrainConfig, to_dict
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.registry import register
from crisp_pl.training.schedule import lr_factor, param_groups


@register("doge", needs={"clusters"},
          settings=lambda cfg: {"doge": to_dict(cfg.selection.doge), "aux_lm": to_dict(cfg.selection.aux_lm),
                                "seed": cfg.selection.seed})
def select(ctx: SelectionContext) -> Groups:
    """Clusters of a coarse tree level weighted by a proxy GPT's gradient alignment with the specialist set."""
    sel = ctx.cfg.selection
    level = sel.doge.level
    groups, trajectory = doge_groups(ctx.pool, ctx.pool_labels[:, level], ctx.cfg.cluster.levels[level], ctx.specialist,
                                     sel.doge, sel.aux_lm, ctx.seed)
    ctx.artifacts["doge_weights.npy"] = trajectory
    return groups


def doge_groups(pool_store, pool_labels: np.ndarray, num_clusters: int, specialist_store, cfg: DogeConfig,
                proxy: AuxLMConfig, seed: int) -> tuple[Groups, np.ndarray]:
    """Pool clusters weighted by DoGE's averaged domain weights, and the (steps, K) alpha trajectory."""
    started = time.perf_counter()
    labels = np.asarray(pool_labels, dtype=np.int64)
    _validate(pool_store, labels, num_clusters, specialist_store, cfg, proxy)
    counts = np.bincount(labels, minlength=num_clusters)
    domains = np.flatnonzero(counts > 0)  # the clusters that can be sampled
    members = np.argsort(labels, kind="stable")  # CSR, as Groups.from_labels
    offsets = np.concatenate([[0], np.cumsum(counts)])
    length = pool_store.window_length

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.random.fork_rng(devices=[]):  # seeds the proxy's init without touching the global RNG
        torch.manual_seed(seeds.stream_seed(seed, "doge.proxy"))
        gpt = GPT(GPTConfig.from_name(proxy.size, block_size=length, vocab_size=padded_vocab_size(pool_store.vocab_size))).to(device)
    defaults = TrainConfig()  # weight decay, clipping and lr floor as the other auxiliary LMs
    optimizer = torch.optim.AdamW(param_groups(gpt, defaults.weight_decay), lr=proxy.lr, betas=(0.9, 0.95))
    rng = seeds.rng(seed, "doge.draws")

    alpha = np.zeros(num_clusters)
    alpha[domains] = 1.0 / len(domains)
    trajectory = np.empty((proxy.steps, num_clusters))
    for step in bar(range(proxy.steps), desc="doge proxy", unit="step"):
        factor = lr_factor(step, proxy.warmup_steps, proxy.steps, defaults.min_lr_ratio)
        target_rows = rng.integers(len(specialist_store), size=cfg.specialist_batch)
        specialist = _tensor(specialist_store.tokens(target_rows), device)
        picks = [members[offsets[d] + rng.integers(counts[d], size=cfg.windows_per_domain)] for d in domains]
        batches = [_tensor(pool_store.tokens(rows), device) for rows in picks]
        new_alpha, grads, _ = doge_step(gpt, alpha[domains], batches, specialist, cfg.step_size * factor)
        alpha[domains] = new_alpha
        trajectory[step] = alpha
        for p, g in zip(gpt.parameters(), grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), defaults.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = proxy.lr * factor
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    weights = trajectory.mean(axis=0)  # DoGE's averaged weights; zero wherever a cluster is empty
    windows_per_step = cfg.specialist_batch + len(domains) * cfg.windows_per_domain
    info = {
        "domains": float(len(domains)),
        "domains_weighted": float((weights > 1.0 / (10 * num_clusters)).sum()),
        "weight_entropy": float(-(weights[weights > 0] * np.log(weights[weights > 0])).sum()),
        "aux_flops": float(gpt.flops_per_token(length - 1) * (length - 1) * windows_per_step * proxy.steps),
        "aux_seconds": time.perf_counter() - started,
    }
    return Groups.from_labels("pool", labels, weights, info), trajectory


def doge_step(gpt, alpha: np.ndarray, batches: list[torch.Tensor], specialist: torch.Tensor,
              step: float) -> tuple[np.ndarray, list[torch.Tensor], np.ndarray]:
    """One DoGE update: new alpha (over the given domains), the proxy gradient sum_i alpha_i g_i for
    that new alpha (one tensor per parameter), and the alignments W_i. Leaves `.grad` untouched.

    batches[i]: (w, L) token windows of domain i; specialist: (S, L) target windows.
    """
    params = [p for p in gpt.parameters() if p.requires_grad]
    g_s = torch.autograd.grad(_loss(gpt, specialist), params)
    g_s_norm = _norm(g_s)
    log_alpha = np.log(alpha, out=np.full(len(alpha), -np.inf), where=alpha > 0)
    total, running_max, z = None, -math.inf, 0.0  # sum_i exp(logit_i - running_max) g_i, and its weight sum
    scores = np.empty(len(batches))
    for i, batch in enumerate(batches):
        g_i = torch.autograd.grad(_loss(gpt, batch), params)
        dot = sum(torch.vdot(a.flatten(), b.flatten()) for a, b in zip(g_i, g_s))
        scores[i] = float(dot / (_norm(g_i) * g_s_norm).clamp_min(1e-30))
        logit = log_alpha[i] + step * scores[i]
        if logit == -math.inf:  # a weight that underflowed to 0 stays 0 (nothing to add)
            continue
        if logit > running_max:  # rescale what is accumulated so every factor stays <= 1
            shrink = math.exp(running_max - logit)
            z *= shrink
            if total is not None:
                torch._foreach_mul_(total, shrink)
            running_max = logit
        weight = math.exp(logit - running_max)
        z += weight
        if total is None:
            total = [g * weight for g in g_i]
        else:
            torch._foreach_add_(total, g_i, alpha=weight)
    new_alpha = mirror_step(alpha, scores, step)
    torch._foreach_div_(total, z)
    return new_alpha, total, scores


def mirror_step(alpha: np.ndarray, scores: np.ndarray, step: float) -> np.ndarray:
    """Exponentiated-gradient (KL mirror descent) ascent step on the simplex:
    alpha_i exp(step * scores_i), renormalized. Zero weights stay zero."""
    logits = np.where(alpha > 0, np.log(np.where(alpha > 0, alpha, 1.0)) + step * scores, -np.inf)
    out = np.exp(logits - logits.max())
    return out / out.sum()


def _loss(gpt, windows: torch.Tensor) -> torch.Tensor:
    """Mean token NLL of (B, L) windows; bf16 autocast on CUDA as in training."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=windows.is_cuda):
        return gpt(windows[:, :-1], windows[:, 1:])[1]


def _norm(grads) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _tensor(tokens: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)


def _validate(pool_store, labels, num_clusters, specialist_store, cfg: DogeConfig, proxy: AuxLMConfig) -> None:
    if len(labels) != len(pool_store):
        raise ValueError(f"DoGE: {len(labels)} pool labels for {len(pool_store)} pool windows")
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= num_clusters:
        raise ValueError(f"DoGE: pool labels must be cluster ids in [0, {num_clusters})")
    if len(specialist_store) == 0:
        raise ValueError("DoGE needs specialist train windows for its target gradient; the specialist set is empty")
    if pool_store.window_length != specialist_store.window_length:
        raise ValueError(f"DoGE: pool windows have {pool_store.window_length} tokens, "
                         f"specialist windows {specialist_store.window_length}")
    for key, value in (("selection.doge.windows_per_domain", cfg.windows_per_domain),
                       ("selection.doge.specialist_batch", cfg.specialist_batch),
                       ("selection.aux_lm.steps", proxy.steps)):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if cfg.step_size < 0:
        raise ValueError(f"selection.doge.step_size must be >= 0, got {cfg.step_size}")
