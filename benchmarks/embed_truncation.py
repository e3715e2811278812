"""How many word pieces of a pool window SBERT needs: windows/s against agreement with the full window.

Embeds a seeded sample of a study's real pool windows at each `--lengths` (MiniLM's `max_seq_length`,
the first pieces of each window) and `--batch-sizes`, and reports windows/s, the hours the whole pool
would take at that rate, and how close each truncation stays to the longest one: the mean cosine to
its embedding, and the share of windows whose nearest of `--k` k-means centroids (fitted on the
longest's embeddings) is the same. Chooses `embed.max_seq_length` for a scale by measurement:

    python benchmarks/embed_truncation.py --study quickstart --scale cpu --n 1024

The pool stage is built first if the cache lacks it. Every figure is appended to
benchmarks/results/embed_truncation.jsonl (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from record import record  # benchmarks/record.py: run as a script, its folder is on the path


def pool_sample(study: str, scale: str, n: int, seed: int) -> tuple[list[str], int]:
    """(n decoded windows drawn without replacement from the study's pool, the pool's window count)."""
    from crisp_pl.corpus.tokenizer import load_tokenizer
    from crisp_pl.corpus.windows import WindowStore
    from crisp_pl.stages.data import pool_stage, tokenizer_stage
    from crisp_pl.study import StudyRunner, load_study

    runner = StudyRunner(load_study(study), scale)
    cfg = runner.points[0].config
    tokenizer = tokenizer_stage(runner.cache, cfg)
    store = WindowStore(pool_stage(runner.cache, cfg, tokenizer).path / "pool", load_tokenizer(tokenizer.path / "tokenizer.json"))
    rows = np.sort(np.random.default_rng(seed).choice(len(store), min(n, len(store)), replace=False))
    return store.texts(rows), len(store)


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(vectors @ centroids.T, axis=1)  # unit vectors: the largest dot product is the nearest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="quickstart")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--n", type=int, default=1024, help="pool windows to embed")
    parser.add_argument("--lengths", default="64,128,256", help="max_seq_length values; the last is the reference")
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--k", type=int, default=32, help="centroids for the agreement of nearest clusters")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss
    import torch

    from crisp_pl.config import EmbedConfig
    from crisp_pl.embed import embed_texts, load_embedder

    texts, pool_windows = pool_sample(args.study, args.scale, args.n, args.seed)
    lengths = [int(x) for x in args.lengths.split(",")]
    batches = [int(x) for x in args.batch_sizes.split(",")]
    model = load_embedder(EmbedConfig(device="cpu"))
    pieces = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    base = {"study": args.study, "scale": args.scale, "n": len(texts), "pool_windows": pool_windows,
            "threads": torch.get_num_threads(), "median_word_pieces": int(np.median(pieces))}
    embed_texts(texts[:64], EmbedConfig(device="cpu", batch_size=32, max_seq_length=lengths[0]), model, progress=False)  # warm

    embedded: dict[int, np.ndarray] = {}
    rows = []
    for length in lengths:
        for batch in batches:
            cfg = EmbedConfig(device="cpu", batch_size=batch, max_seq_length=length)
            start = time.perf_counter()
            out = embed_texts(texts, cfg, model, progress=False)
            seconds = time.perf_counter() - start
            embedded.setdefault(length, out.astype(np.float32))
            rate = len(texts) / seconds
            rows.append(dict(base, max_seq_length=length, batch_size=batch, windows_per_s=round(rate, 1),
                             pool_minutes=round(pool_windows / rate / 60, 1)))
    reference = embedded[lengths[-1]]
    kmeans = faiss.Kmeans(reference.shape[1], args.k, niter=20, seed=args.seed, spherical=True)
    kmeans.train(reference)
    centroids = kmeans.centroids / np.linalg.norm(kmeans.centroids, axis=1, keepdims=True)
    for row in rows:
        vectors = embedded[row["max_seq_length"]]
        row.update(mean_cosine_to_longest=round(float((vectors * reference).sum(1).mean()), 4),
                   same_nearest_of_k=round(float((nearest(vectors, centroids) == nearest(reference, centroids)).mean()), 3),
                   k=args.k)
        record("embed_truncation", row)


if __name__ == "__main__":
    main()
