"""Seconds per level of ClusterTree.fit and vectors/s of assign for N 384-d fp16 vectors.

Prints one JSON line per level, one for assign, and (when faiss and torch both run here) the
faiss-CPU over torch ratio of total fit time on the same data. On a GPU machine:

    python benchmarks/cluster_scale.py --n 1000000 --levels 64,1024,16384

The GPU check's tree (scripts/gpu_check.py): 64 -> 4,096 -> 262,144 leaves over 10M vectors, the batched level
fit first, then the per-parent one, each with its assignment and squared error per vector:

    python benchmarks/cluster_scale.py --n 10000000 --levels 64,4096,262144 --fits per_parent,batched

CPU smoke check, and the per-parent against the batched level fit:

    python benchmarks/cluster_scale.py --n 20000 --levels 8,64
    python benchmarks/cluster_scale.py --n 200000 --levels 16,256,4096 --fits per_parent,batched --data blobs

Against faiss's own flat k-means at the leaf count, on the same data in the same run (`--flat-niter`
Lloyd iterations of it; the tree's levels run `--niter` each), with the peak resident memory after each:

    python benchmarks/cluster_scale.py --n 1000000 --levels 16,256,4096,65536 --no-compare --flat-niter 1

Every figure is appended to benchmarks/results/cluster_scale.jsonl (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from record import record  # benchmarks/record.py: run as a script, its folder is on the path


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def make_data(n: int, d: int, kind: str, seed: int = 0, device: str = "cpu") -> np.ndarray:
    """(n, d) unit-norm fp16 rows: isotropic noise (`random`) or 4096 Gaussian blobs (`blobs`), drawn by numpy,
    or by torch on `device` when that is a GPU (10M rows there take seconds; numpy on one core, minutes)."""
    if device != "cpu":
        return _make_data_torch(n, d, kind, seed, device)
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4096, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float16)
    for s in range(0, n, 1 << 17):  # chunks keep the fp32 temporaries small
        m = min(n, s + (1 << 17)) - s
        x = rng.standard_normal((m, d), dtype=np.float32)
        if kind == "blobs":
            x = centers[rng.integers(len(centers), size=m)] + 0.3 * x
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _make_data_torch(n: int, d: int, kind: str, seed: int, device: str) -> np.ndarray:
    import torch

    gen = torch.Generator(device).manual_seed(seed)
    centers = torch.randn(4096, d, generator=gen, device=device)
    out = np.empty((n, d), dtype=np.float16)
    for s in range(0, n, 1 << 20):
        m = min(n, s + (1 << 20)) - s
        x = torch.randn(m, d, generator=gen, device=device)
        if kind == "blobs":
            x = centers[torch.randint(len(centers), (m,), generator=gen, device=device)] + 0.3 * x
        out[s : s + m] = torch.nn.functional.normalize(x, dim=1).half().cpu().numpy()
    return out


def leaf_sse(x: np.ndarray, leaves: np.ndarray, labels: np.ndarray, device: str = "cpu") -> float:
    """Sum over rows of the squared distance to their leaf centroid (chunked; on `device` when a GPU)."""
    if device == "cpu":
        return float(sum(((x[s : s + 65536].astype(np.float32) - leaves[labels[s : s + 65536]]) ** 2).sum()
                         for s in range(0, len(x), 65536)))
    import torch

    centroids = torch.from_numpy(leaves).to(device, torch.float32)
    total = 0.0
    for s in range(0, len(x), 1 << 20):
        rows = torch.from_numpy(x[s : s + (1 << 20)]).to(device, torch.float32)
        near = centroids[torch.from_numpy(labels[s : s + (1 << 20)]).to(device)]
        total += float(((rows - near) ** 2).sum(dtype=torch.float64))
    return total


def run(x: np.ndarray, levels: list[int], backend: str, niter: int, base: dict, fit: str = "per_parent",
        device: str = "cpu") -> float:
    """Fit + assign with one backend and level fit; prints its figures (and the leaves' squared error) and
    returns the total fit seconds."""
    from crisp_pl.cluster import ClusterTree, resolve_backend
    from crisp_pl.config import ClusterConfig

    resolved = resolve_backend(backend)
    tree = ClusterTree.fit(x, ClusterConfig(levels=levels, niter=niter, backend=backend, fit=fit), progress=False)
    base = dict(base, fit=fit)
    for level, seconds in enumerate(tree.fit_seconds_):
        record("cluster_scale", dict(base, backend=resolved, figure="fit_level", level=level, clusters=levels[level],
                                     seconds=round(seconds, 3), vectors_per_s=round(len(x) / seconds, 1)))
    start = time.perf_counter()
    labels = tree.assign(x)
    seconds = time.perf_counter() - start
    agree = float((labels == tree.labels_).all(1).mean())
    sse = leaf_sse(x, np.asarray(tree.centroids[-1], np.float32), labels[:, -1], device)
    record("cluster_scale", dict(base, backend=resolved, figure="assign", levels=levels, seconds=round(seconds, 3),
                                 vectors_per_s=round(len(x) / seconds, 1), same_as_fit=agree, leaf_sse_per_vector=round(sse / len(x), 5)))
    record("cluster_scale", dict(base, backend=resolved, figure="tree_total", levels=levels, seconds=round(sum(tree.fit_seconds_), 3),
                                 peak_rss_gb=peak_rss_gb()))
    return sum(tree.fit_seconds_)


def run_flat(x: np.ndarray, k: int, niter: int, base: dict) -> float:
    """faiss's flat k-means with k centroids on the same vectors: seconds, per iteration, its squared error."""
    import faiss

    data = x.astype(np.float32)
    # every vector in every iteration (faiss would subsample above 256 a centroid; at the leaf count it does not)
    kmeans = faiss.Kmeans(x.shape[1], k, niter=niter, seed=0, max_points_per_centroid=max(256, len(x) // k + 1), verbose=False)
    start = time.perf_counter()
    kmeans.train(data)
    seconds = time.perf_counter() - start
    sse, _ = kmeans.index.search(data, 1)
    record("cluster_scale", dict(base, backend="faiss", figure="flat_kmeans", clusters=k, flat_niter=niter, seconds=round(seconds, 3),
                                 seconds_per_iteration=round(seconds / niter, 3), leaf_sse_per_vector=round(float(sse.sum()) / len(x), 5),
                                 peak_rss_gb=peak_rss_gb()))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--levels", default="64,1024,16384")
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--data", choices=("random", "blobs"), default="random")
    parser.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto")
    parser.add_argument("--no-compare", action="store_true", help="skip the faiss-CPU vs torch comparison")
    parser.add_argument("--fits", default="per_parent", help="level fits to run, comma separated: per_parent,batched")
    parser.add_argument("--data-device", default="auto", help="where the data and the squared error are computed "
                                                                  "(auto: cuda when torch sees it, else cpu)")
    parser.add_argument("--flat-niter", type=int, default=0, help="also faiss's flat k-means at the leaf count, this many iterations")
    args = parser.parse_args()

    import torch

    from crisp_pl.cluster import _faiss_gpus, resolve_backend

    levels = [int(k) for k in args.levels.split(",")]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.data_device == "auto" else args.data_device
    started = time.perf_counter()
    x = make_data(args.n, args.d, args.data, device=device)
    print(f"data: {args.n:,} x {args.d} {args.data} vectors on {device} in {time.perf_counter() - started:.1f} s", flush=True)
    base = {"torch_device": "cuda" if torch.cuda.is_available() else "cpu", "n": args.n, "d": args.d, "data": args.data,
            "niter": args.niter, "threads": torch.get_num_threads(), "data_device": device}

    main_backend = resolve_backend(args.backend)
    fits = args.fits.split(",")
    for fit in fits[1:]:  # the other level fits first, same data and backend: the ratio to the first is theirs
        other = run(x, levels, args.backend, args.niter, base, fit, device)
        first = run(x, levels, args.backend, args.niter, base, fits[0], device)
        record("cluster_scale", dict(base, figure=f"ratio_{fits[0]}_over_{fit}", levels=levels, ratio=round(first / other, 2)))
    if len(fits) > 1:
        return
    seconds = {main_backend: run(x, levels, args.backend, args.niter, base, device=device)}
    if not args.no_compare and _faiss_gpus() == 0:  # faiss on CPU only: compare it with torch
        other = "torch" if main_backend == "faiss" else "faiss"
        seconds[resolve_backend(other)] = run(x, levels, other, args.niter, base, device=device)
        record("cluster_scale", dict(base, figure="ratio_faiss_cpu_over_torch", levels=levels,
                                     faiss_seconds=round(seconds["faiss"], 3), torch_seconds=round(seconds["torch"], 3),
                                     ratio=round(seconds["faiss"] / seconds["torch"], 2)))
    if args.flat_niter:
        flat = run_flat(x, levels[-1], args.flat_niter, base)
        tree = seconds[main_backend]
        record("cluster_scale", dict(base, figure="ratio_flat_over_tree", levels=levels, flat_niter=args.flat_niter,
                                     ratio=round(flat / tree, 2)))


if __name__ == "__main__":
    main()
