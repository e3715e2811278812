"""Hierarchical k-means over window embeddings: CRISP's cluster tree (e.g. 64 -> 1024 -> 16384).

Level 0 is one k-means into `levels[0]` clusters. Each next level splits every parent into
`branch = levels[i] / levels[i-1]` children, fitted only on (a bounded sample of) the points the
parent holds, so child `j` of parent `p` has the dense id `p * branch + j`. Points are assigned
top-down: nearest level-0 centroid, then the nearest child of that parent, and so on.

A parent holding fewer points than `branch` gets one child per point and the remaining slots are
copies of those children (a parent with no point at all: copies of its own centroid), so every
level stays a dense (k, d) array. Copies are never assigned: argmin keeps the first index on ties,
and `valid` marks them so assignment masks them out even where float rounding could break a tie
the other way.

`cluster.fit: batched` fits each level below the first in one batched Lloyd over all its parents
(`_fit_level_batched`) instead of a k-means per parent: the 262k-leaf level is then a few large
tensor operations per iteration rather than ~16k sequential fits.

Backends: `faiss` (faiss.Kmeans, on GPU when faiss sees one) and `torch` (Lloyd iterations with
the distance work as matmuls: fp16 on cuda, fp32 on cpu). Both start from the same k-means++
seeding. Every fit draws from its own generator, seeded from `(cfg.seed, level, parent)`, so the
tree is deterministic for a given seed, backend and device.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from crisp_pl.config import ClusterConfig


class ClusterError(ValueError):
    """Clustering cannot run with this config and data; the message names the config key."""


_BUDGET = {"cuda": 2**26, "cpu": 2**22}  # elements of the largest temporary (rows x width)


def _faiss_gpus() -> int:
    """GPUs faiss can use; -1 when faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return -1
    return faiss.get_num_gpus()


def resolve_backend(backend: str) -> str:
    """`auto` / `faiss` / `torch` -> the backend that runs: `faiss-gpu`, `faiss` (CPU) or `torch`."""
    import torch

    if backend not in ("auto", "faiss", "torch"):
        raise ClusterError(f"cluster.backend must be auto, faiss or torch, got {backend!r}")
    gpus = _faiss_gpus()
    if backend == "faiss" and gpus < 0:
        raise ClusterError("cluster.backend is `faiss` but faiss is not installed")
    if backend == "torch" or (backend == "auto" and gpus <= 0 and (torch.cuda.is_available() or gpus < 0)):
        return "torch"
    return "faiss-gpu" if gpus > 0 else "faiss"


def resolve_fit(fit: str) -> str:
    """`auto` -> `batched` where torch sees a GPU (a few large products per level), else `per_parent`."""
    import torch

    return ("batched" if torch.cuda.is_available() else "per_parent") if fit == "auto" else fit


def _compute():
    """Device and dtype of the torch distance work: fp16 matmuls on cuda, fp32 on cpu."""
    import torch

    return ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32)


def _rows(data, idx, tensor: bool):
    """Rows `idx` (indices or a slice) of `data`, numpy or a tensor resident on the device: a
    compute tensor (m, d) when `tensor`, else float32 numpy (what faiss takes)."""
    import torch

    if isinstance(data, np.ndarray):
        rows = np.array(data[idx])  # a copy: slices of a read-only memmap cannot back a tensor
        return torch.from_numpy(rows).to(*_compute()) if tensor else rows.astype(np.float32, copy=False)
    rows = data[idx if isinstance(idx, slice) else torch.as_tensor(idx, device=data.device)]
    return rows if tensor else rows.float().cpu().numpy()


# --- one k-means fit -----------------------------------------------------------------------------


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, max_points_per_centroid: int = 256,
           backend: str = "auto") -> np.ndarray:
    """Centroids (k, d) float32 of `x` (n, d), fitted on at most k * max_points_per_centroid sampled rows."""
    x = np.asarray(x)
    if not 1 <= k <= len(x):
        raise ClusterError(f"k-means into {k} clusters needs 1 <= k <= n points, got n={len(x)}")
    return _fit(x, np.arange(len(x)), k, niter, np.random.default_rng(seed), max_points_per_centroid,
                resolve_backend(backend))


def _fit(data, idx: np.ndarray, k: int, niter: int, rng: np.random.Generator, mppc: int, backend: str) -> np.ndarray:
    """k-means of rows `idx` of `data`: seeded subsample -> k-means++ seeding -> Lloyd iterations."""
    import torch

    if len(idx) > k * mppc:
        idx = np.sort(rng.choice(idx, k * mppc, replace=False))  # sorted: sequential reads from a memmap
    rows = _rows(data, idx, tensor=backend == "torch")
    if backend == "torch":
        return _lloyd(rows, _kmeanspp(rows, k, rng), niter, rng).cpu().numpy()
    init = _kmeanspp(torch.from_numpy(rows), k, rng).numpy()
    return _faiss_kmeans(rows, init, niter, int(rng.integers(2**31 - 1)), mppc, gpu=backend == "faiss-gpu")


def _kmeanspp(x, k: int, rng: np.random.Generator):
    """Greedy k-means++ seeding on at most 64k of the rows: (k, d) fp32 on x's device.

    Each step draws 2 + ln(k) candidates by D^2 sampling and keeps the one that lowers the
    potential most (as scikit-learn does): plain D^2 sampling often puts two seeds in one
    well-separated blob when the dimension is high, and Lloyd never moves them apart. The draws
    come from `rng` up front and sampling is a searchsorted on the CDF: no device sync in the loop.
    """
    import torch

    if len(x) > 64 * k:
        x = x[torch.as_tensor(np.sort(rng.choice(len(x), 64 * k, replace=False)), device=x.device)]
    x = x.float()
    sq = (x * x).sum(1)  # (m,)
    trials = 2 + int(np.log(k))
    u = torch.as_tensor(rng.random((k, trials)), device=x.device)  # (k, trials) float64
    first = int(rng.integers(len(x)))
    centers = torch.empty(k, x.shape[1], device=x.device)
    centers[0] = x[first]
    d2 = _sqdist(x, sq, x[first : first + 1])[0]  # (m,) to the nearest seed so far
    for i in range(1, k):
        cdf = d2.double().cumsum(0)
        cand = torch.searchsorted(cdf, u[i] * cdf[-1], right=True).clamp_(max=len(x) - 1)  # (trials,)
        pot = torch.minimum(d2[None], _sqdist(x, sq, x[cand]))  # (trials, m)
        best = pot.sum(1).argmin()
        centers[i], d2 = x[cand[best]], pot[best]
    return centers


def _sqdist(x, sq, c):
    """Squared distances (r, m) from the rows of c (r, d) to those of x (m, d); sq = |x|^2."""
    return (sq[None] + (c * c).sum(1)[:, None] - 2 * c @ x.T).clamp_(min=0)


def _lloyd(x, centers, niter: int, rng: np.random.Generator):
    """Lloyd iterations; an empty cluster is re-seeded at a random point. x (n, d), centers (k, d) fp32."""
    import torch

    n, k = len(x), len(centers)
    reseed = torch.as_tensor(rng.integers(0, n, size=(max(niter, 1), k)), device=x.device)  # (niter, k)
    chunk = max(1, _BUDGET[x.device.type] // k)
    for it in range(niter):
        c, bias = _level_tensors(centers, None, x.dtype)
        sums = torch.zeros_like(centers)
        counts = torch.zeros(k, dtype=torch.long, device=x.device)
        for s in range(0, n, chunk):
            xc = x[s : s + chunk]
            labels = _nearest(xc, c, bias)
            _add_rows(sums, labels, xc.float())
            counts += torch.bincount(labels, minlength=k)
        mean = sums / counts.clamp(min=1)[:, None]
        centers = torch.where((counts == 0)[:, None], x[reseed[it]].float(), mean)
    return centers


def _add_rows(sums, labels, rows) -> None:
    """sums[labels[i]] += rows[i], in a fixed order so that fits are bit-reproducible."""
    if sums.device.type == "cuda":
        sums.index_put_((labels,), rows, accumulate=True)  # sort-based on cuda, unlike index_add_'s atomics
    else:
        sums.index_add_(0, labels, rows)  # serial on cpu, unlike index_put_'s parallel atomics


def _faiss_kmeans(x: np.ndarray, init: np.ndarray, niter: int, seed: int, mppc: int, gpu: bool) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(x.shape[1], len(init), niter=niter, seed=seed, gpu=gpu, verbose=False,
                      max_points_per_centroid=mppc, min_points_per_centroid=1)
    km.train(x, init_centroids=init)
    return np.array(km.centroids, dtype=np.float32)


# --- nearest-centroid assignment -----------------------------------------------------------------


def _level_tensors(centroids, valid, dtype):
    """(k, d) centroids in the compute dtype and their bias |c|^2 (+inf where not valid), fp32."""
    import torch

    device = centroids.device if isinstance(centroids, torch.Tensor) else _compute()[0]
    c = torch.as_tensor(centroids, device=device).to(dtype)
    bias = (c.float() ** 2).sum(1)
    if valid is not None:
        bias = bias.masked_fill(~torch.as_tensor(valid, device=device), float("inf"))
    return c, bias


def _nearest(x, c, bias):
    """Index of the nearest centroid: argmin_j |c_j|^2 - 2 x.c_j. x (m, d), c (k, d) -> (m,)."""
    return (bias - 2 * (x @ c.T).float()).argmin(1)


def _nearest_child(x, parent, c, bias, branch: int):
    """Nearest among each row's parent's children: x (m, d), parent (m,) -> global child ids (m,)."""
    import torch

    ids = parent[:, None] * branch + torch.arange(branch, device=x.device)  # (m, branch)
    dots = torch.einsum("md,mbd->mb", x, c[ids]).float()  # (m, branch)
    return ids.gather(1, (bias[ids] - 2 * dots).argmin(1, keepdim=True))[:, 0]


def _label_level(x, c, bias, parent, branch: int):
    """Labels of one level for a batch x (m, d), in chunks that bound the temporaries."""
    import torch

    width = len(c) if parent is None else branch * x.shape[1]
    chunk = max(1, _BUDGET[x.device.type] // width)
    out = []
    for s in range(0, len(x), chunk):
        xc = x[s : s + chunk]
        out.append(_nearest(xc, c, bias) if parent is None else _nearest_child(xc, parent[s : s + chunk], c, bias, branch))
    return torch.cat(out)


# --- the tree ------------------------------------------------------------------------------------


def check_levels(levels: list[int], n: int | None = None) -> None:
    """ClusterError naming `cluster.levels` unless they are nested multiples that fit in n points."""
    if not levels or any(k < 1 for k in levels):
        raise ClusterError(f"cluster.levels must be positive, got {levels}")
    for upper, lower in zip(levels, levels[1:]):
        if lower % upper:
            raise ClusterError(f"cluster.levels: {lower} is not a multiple of {upper} (levels must be nested)")
    for name, k in (("cluster.levels[0]", levels[0]), ("cluster.levels[-1] (leaves)", levels[-1])):
        if n is not None and k > n:
            raise ClusterError(f"{name} = {k}: more clusters than windows ({n}); use smaller levels or more windows")


class ClusterTree:
    """Per-level centroids (k_i, d) float32 and `valid` masks (False: a padded copy)."""

    def __init__(self, centroids: list[np.ndarray], valid: list[np.ndarray]):
        if centroids:
            check_levels([len(c) for c in centroids])
        self.centroids = [np.asarray(c, dtype=np.float32) for c in centroids]
        self.valid = [np.asarray(v, dtype=bool) for v in valid]
        self._tensors = None  # device copies for assign, built on first use

    @property
    def levels(self) -> list[int]:
        return [len(c) for c in self.centroids]

    def branch(self, level: int) -> int:
        """Children per parent at `level` (level 0: its cluster count)."""
        return self.levels[level] // (self.levels[level - 1] if level else 1)

    @classmethod
    def fit(cls, x: np.ndarray, cfg: ClusterConfig, progress: bool = True) -> "ClusterTree":
        """Fit the tree on x (n, d).

        The fit's top-down assignment is kept in `labels_` (n, n_levels), the seconds spent on
        each level (its k-means fits plus labelling every point) in `fit_seconds_`, the backend
        that ran (`faiss-gpu`, `faiss`, `torch`) in `backend_` and the level fit in `fit_`.
        """
        x = np.asarray(x)
        if x.ndim != 2:
            raise ClusterError(f"clustering expects a (n, d) array, got shape {x.shape}")
        check_levels(list(cfg.levels), len(x))
        backend, fit = resolve_backend(cfg.backend), resolve_fit(cfg.fit)
        data = _resident(x)
        tree = cls([], [])
        labels = np.zeros((len(x), len(cfg.levels)), dtype=np.int32)
        tree.fit_seconds_ = []
        for level, k in enumerate(cfg.levels):
            start = time.perf_counter()
            parent = labels[:, level - 1] if level else None  # level 0: every point under one root
            above = tree.centroids[level - 1] if level else np.zeros((1, x.shape[1]), np.float32)
            if level and fit == "batched":
                c, v = _fit_level_batched(data, parent, above, k // len(above), cfg, level)
            else:
                c, v = _fit_level(data, parent, above, k // len(above), cfg, level, backend, progress)
            tree.centroids.append(c)
            tree.valid.append(v)
            tree._tensors = None
            labels[:, level] = tree._labels(data, level, parent)
            tree.fit_seconds_.append(time.perf_counter() - start)  # labels are on the host: device work is done
        tree.labels_ = labels
        tree.backend_, tree.fit_ = backend, fit
        return tree

    def assign(self, x: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Top-down cluster ids (n, n_levels) int32 of x (n, d): column i is the level-i cluster."""
        x = np.asarray(x)
        out = np.zeros((len(x), len(self.levels)), dtype=np.int32)
        for level in range(len(self.levels)):
            out[:, level] = self._labels(x, level, out[:, level - 1] if level else None, batch_size)
        return out

    def _labels(self, data, level: int, parent: np.ndarray | None, batch_size: int = 65536) -> np.ndarray:
        import torch

        if self._tensors is None:
            self._tensors = [_level_tensors(c, v, _compute()[1]) for c, v in zip(self.centroids, self.valid)]
        c, bias = self._tensors[level]
        out = np.empty(len(data), dtype=np.int32)
        for s in range(0, len(data), batch_size):
            xb = _rows(data, slice(s, s + batch_size), tensor=True)
            pb = None if parent is None else torch.as_tensor(parent[s : s + batch_size], device=xb.device).long()
            out[s : s + len(xb)] = _label_level(xb, c, bias, pb, self.branch(level)).cpu().numpy()
        return out

    def save(self, path: str | Path) -> None:
        """npz with `levels`, `centroids_i`, `valid_i`; written to a temp file then renamed."""
        path = Path(path)
        arrays = {"levels": np.asarray(self.levels, dtype=np.int64)}
        for i, (c, v) in enumerate(zip(self.centroids, self.valid)):
            arrays[f"centroids_{i}"], arrays[f"valid_{i}"] = c, v
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "ClusterTree":
        with np.load(path) as z:
            n = len(z["levels"])
            return cls([z[f"centroids_{i}"] for i in range(n)], [z[f"valid_{i}"] for i in range(n)])


def _resident(x: np.ndarray):
    """On cuda, the whole x as one fp16 device tensor (uploaded in chunks); on cpu, x itself."""
    import torch

    if _compute()[0] == "cpu":
        return x
    out = torch.empty(x.shape, dtype=_compute()[1], device="cuda")
    for s in range(0, len(x), 1 << 18):
        out[s : s + (1 << 18)] = _rows(x, slice(s, s + (1 << 18)), tensor=True)
    return out


def _fit_level(data, parent: np.ndarray | None, above: np.ndarray, branch: int, cfg: ClusterConfig,
               level: int, backend: str, progress: bool):
    """Children (n_parents * branch, d) and their valid mask, one k-means per parent (row of `above`)."""
    from crisp_pl.progress import bar

    n_parents = len(above)
    parent = np.zeros(len(data), np.int32) if parent is None else parent
    order = np.argsort(parent, kind="stable")  # points grouped by parent, ascending within a group
    ends = np.cumsum(np.bincount(parent, minlength=n_parents))
    centroids = np.empty((n_parents * branch, data.shape[1]), dtype=np.float32)
    valid = np.zeros(n_parents * branch, dtype=bool)
    desc = f"k-means level {level} ({n_parents * branch} clusters)"
    for p in bar(range(n_parents), desc=desc, disable=not progress):
        idx = order[ends[p - 1] if p else 0 : ends[p]]
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(level, p)))
        slot = slice(p * branch, (p + 1) * branch)
        centroids[slot], valid[slot] = _fit_children(data, idx, branch, above, p, cfg, rng, backend)
    return centroids, valid


def _fit_level_batched(data, parent: np.ndarray, above: np.ndarray, branch: int, cfg: ClusterConfig, level: int):
    """Every parent's children at once (`cluster.fit: batched`): the parents' samples laid out as padded
    (parents, sample, d) blocks, each block seeded (greedy k-means++) and iterated (Lloyd) for all its
    parents together by batched matrix products, so a level costs a few large tensor operations per
    block of hundreds of parents instead of one k-means per parent.

    Each parent keeps a seeded random sample of at most branch * max_points_per_centroid of its points;
    a parent with at most `branch` points gets them as its children, padded with copies, as in the
    per-parent fit. The random draws are made for all parents up front, so the tree does not depend
    on how the parents are grouped into blocks (the device's memory budget)."""
    import torch

    n_parents, cap = len(above), branch * cfg.max_points_per_centroid
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(level, n_parents)))
    order = np.lexsort((rng.random(len(parent)), parent))  # grouped by parent, in random order within each
    counts = np.bincount(parent, minlength=n_parents)
    rank = np.arange(len(order)) - (np.cumsum(counts) - counts)[parent[order]]
    keep, rank = order[rank < cap], rank[rank < cap]
    width = int(np.minimum(counts, cap).max())
    table = np.full((n_parents, width), -1, dtype=np.int64)
    table[parent[keep], rank] = keep  # row j of parent p: the index of its j-th sampled point
    trials = 2 + int(np.log(branch))  # greedy seeding: the best of a few D^2 draws, as per-parent k-means++ does
    draws = rng.random((branch, trials, n_parents))

    slot_parent, slot = np.repeat(np.arange(n_parents), branch), np.tile(np.arange(branch), n_parents)
    seeds = np.minimum(counts, branch)[slot_parent]  # children a parent can really have
    valid = np.where(seeds > 0, slot < seeds, slot == 0)
    source = table[slot_parent, slot % np.maximum(seeds, 1)]
    centers = np.where((seeds > 0)[:, None], _rows(data, np.maximum(source, 0), tensor=False), np.repeat(above, branch, axis=0))
    centers = centers.reshape(n_parents, branch, -1).astype(np.float32)

    device, _ = _compute()
    fitted = np.flatnonzero(counts > branch)  # the others keep their points
    block = max(1, _BLOCK[device] // (width * data.shape[1]))
    for s in range(0, len(fitted), block):
        ids = fitted[s : s + block]
        rows = torch.as_tensor(table[ids], device=device)
        xp = _rows(data, np.maximum(table[ids], 0).ravel(), tensor=True).float().view(len(ids), width, -1)
        u = torch.as_tensor(draws[:, :, ids], device=device)
        centers[ids] = _kmeans_padded(xp, rows >= 0, branch, cfg.niter, u).cpu().numpy()
    return centers.reshape(n_parents * branch, -1), valid


_BLOCK = {"cuda": 2**30, "cpu": 2**26}  # elements of one block of parents' padded samples


def _kmeans_padded(xp, real, branch: int, niter: int, u):
    """k-means of each of g parents' rows at once: xp (g, width, d) padded, `real` (g, width) marks its
    rows (a parent's real rows come first); `u` (branch, trials, g) uniform draws. Greedy k-means++
    seeding, then `niter` Lloyd iterations (an empty child keeps its place), all by batched products.
    Returns (g, branch, d)."""
    import torch

    g, width, _ = xp.shape
    sq = (xp * xp).sum(-1)  # (g, width)
    sizes = real.sum(1)
    d2 = torch.where(real, torch.inf, 0.0).double()  # padding rows: never drawn, never counted
    seeds = torch.zeros(g, branch, xp.shape[-1], device=xp.device)
    at = torch.arange(g, device=xp.device)
    for i in range(branch):
        if i == 0:
            picks = (u[0, :1].T * sizes[:, None]).long()  # (g, 1): a random first seed
        else:
            cdf = d2.cumsum(1)  # (g, width)
            picks = torch.searchsorted(cdf, (u[i].T * cdf[:, -1:]).contiguous(), right=True)  # (g, trials)
        picks = torch.minimum(picks, (sizes - 1)[:, None])
        cand = xp[at[:, None], picks]  # (g, trials, d)
        dist = (sq[:, :, None] + (cand * cand).sum(-1)[:, None, :] - 2 * torch.bmm(xp, cand.transpose(1, 2))).clamp(min=0)
        pots = torch.where(real[:, :, None], torch.minimum(d2[:, :, None], dist.double()), 0.0)  # (g, width, trials)
        best = pots.sum(1).argmin(1)  # (g,)
        seeds[:, i] = cand[at, best]
        d2 = pots[at, :, best]
    centers = seeds
    for _ in range(niter):
        dist = (centers * centers).sum(-1)[:, None, :] - 2 * torch.bmm(xp, centers.transpose(1, 2))  # (g, width, branch)
        labels = (at[:, None] * branch + dist.argmin(-1))[real]
        sums = torch.zeros(g * branch, xp.shape[-1], device=xp.device).index_add_(0, labels, xp[real])
        hits = torch.bincount(labels, minlength=g * branch)[:, None]
        centers = torch.where(hits > 0, sums / hits.clamp(min=1), centers.reshape(g * branch, -1)).view(g, branch, -1)
    return centers


def _fit_children(data, idx: np.ndarray, branch: int, above, p: int, cfg: ClusterConfig,
                  rng: np.random.Generator, backend: str):
    """`branch` children of parent p from its points idx, padded with copies when it holds too few."""
    if len(idx) == 0:  # an empty parent: copies of its own centroid, the first one assignable
        return np.repeat(above[p : p + 1], branch, axis=0), np.arange(branch) == 0
    if len(idx) <= branch:  # one child per point; k-means would return the points themselves
        real = _rows(data, idx, tensor=False)
    else:
        real = _fit(data, idx, branch, cfg.niter, rng, cfg.max_points_per_centroid, backend)
    slots = np.arange(branch)
    return real[slots % len(real)], slots < len(real)
