"""DSIR filter: data selection with importance resampling (Xie et al., NeurIPS 2023).

Through the authors' `data-selection` package (pinned 1.0.3): each window becomes a vector of
hashed unigram + bigram counts; bag-of-n-gram distributions are fitted on the specialist windows
(target) and on the pool (raw), and a pool window's log importance weight is
sum_j counts_j * (log p_target_j - log p_raw_j). `k = round(keep_fraction * N)` windows are then
drawn without replacement with probability proportional to the weights, by the package's own rule:
Gumbel top-k on the log weights. Training draws uniformly from the kept windows.

What the package does not give, done here:
- window indices. `resample()` writes the chosen texts to files; the log weights it saves are per
  "virtual shard" (shard s of S holds lines s, s + S, s + 2S, ...), so they are put back in line
  order here, and line i of the pool file is pool window i.
- a seed. The package draws its Gumbel noise from numpy's global RNG; here it comes from the seed.
- fixed-length windows. The package drops examples under `min_example_length` (100) words, a
  filter meant for variable-length documents. Every window has the same number of GPT-2 tokens,
  so the filter is off (0): at 64-token windows it would drop every window.
- offline tokenization. `word_tokenize` needs nltk's punkt data (a download); `wordpunct` is a
  regex tokenizer that needs nothing.
- a tokenizer that survives pickling. With the installed nltk (3.10.4, whose regexes all go
  through `nltk.redos`) the package's `wordpunct`, a module-level WordPunctTokenizer, breaks the
  `num_proc > 1` path once it has tokenized anything in the parent process: its compiled pattern
  carries nltk.redos' `_UNSET` sentinel, which a worker unpickles as a different object
  ("ValueError: timeout not float or None"). `wordpunct_tokenize` below is the same pattern and
  flags on the same `regex` engine, as a plain importable function.
The raw distribution is fitted on the whole pool (`num_tokens_to_fit="all"`): the package's
default stops after the first 100k * num_buckets n-grams, and the pool file is in source order.
Hashing runs on the CPU (`num_proc` processes) and counts as 0 accelerator FLOPs.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from crisp_pl import seeds
from crisp_pl.config import DSIRConfig, to_dict
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.filtering import filter_groups, kept_count, top_k
from crisp_pl.selection.registry import register

MIN_EXAMPLE_LENGTH = 0  # words; see the module docstring
TEXT_BATCH = 4096  # windows decoded at a time when writing the jsonl files


def _settings(cfg) -> dict:
    dsir = {k: v for k, v in to_dict(cfg.selection.dsir).items() if k != "num_proc"}  # processes do not change weights
    return {"seed": cfg.selection.seed, "dsir": dsir}


@register("dsir", settings=_settings)
def select(ctx: SelectionContext) -> Groups:
    """One group: pool windows resampled by DSIR's hashed n-gram importance weights."""
    cfg = ctx.cfg.selection.dsir
    groups, scores = dsir_groups(ctx.pool, ctx.specialist, cfg, cfg.keep_fraction, ctx.seed, ctx.work_dir)
    ctx.artifacts["scores.npy"] = scores
    return groups


def dsir_groups(pool_store, specialist_store, cfg: DSIRConfig, keep_fraction: float, seed: int,
                work_dir: Path) -> tuple[Groups, np.ndarray]:
    """Resample `round(keep_fraction * N)` pool windows without replacement by DSIR importance weights.

    `work_dir` holds the jsonl files and the package's cache while it runs (removed after).
    Returns the one-group selection and the (N,) float32 log importance weights (higher = more
    specialist-like).
    """
    started = time.perf_counter()
    n_pool = len(pool_store)
    if len(specialist_store) == 0:
        raise ValueError("DSIR needs specialist train windows as its target; the specialist set is empty")
    if cfg.num_proc < 1 or cfg.ngrams < 1 or cfg.num_buckets < 1:
        raise ValueError(f"dsir.num_proc, dsir.ngrams and dsir.num_buckets must be >= 1, got {cfg.num_proc}, "
                         f"{cfg.ngrams} and {cfg.num_buckets}")
    k = kept_count(keep_fraction, n_pool)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    raw, target = work_dir / "pool.jsonl", work_dir / "specialist.jsonl"
    write_jsonl(pool_store, raw)
    write_jsonl(specialist_store, target)

    from data_selection import HashedNgramDSIR

    dsir = HashedNgramDSIR([str(raw)], [str(target)], cache_dir=str(work_dir / "dsir_cache"), num_proc=cfg.num_proc,
                           ngrams=cfg.ngrams, num_buckets=cfg.num_buckets, tokenizer="wordpunct",
                           min_example_length=MIN_EXAMPLE_LENGTH)
    dsir.tokenizer = wordpunct_tokenize  # the same tokens as `wordpunct`; see the module docstring
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    dsir.compute_importance_weights()
    log_weights = read_log_weights(dsir, n_pool)
    # Intermediates only: the pool file is the whole pool's text, too big to leave in a cache folder.
    shutil.rmtree(dsir.cache_dir, ignore_errors=True)
    raw.unlink()
    target.unlink()

    # Gumbel top-k: adding Gumbel noise to log weights and keeping the k largest samples k windows
    # without replacement with probability proportional to the weights (the package's resample()).
    noisy = log_weights + seeds.rng(seed, "dsir.gumbel").gumbel(size=n_pool)
    selected = top_k(noisy, np.arange(n_pool), k)
    info = {"kept_windows": k, "keep_fraction": k / n_pool, "aux_flops": 0.0, "aux_seconds": time.perf_counter() - started,
            "log_weight_mean_kept": float(log_weights[selected].mean()), "log_weight_mean_pool": float(log_weights.mean())}
    return filter_groups(selected, info), log_weights.astype(np.float32)


def write_jsonl(store, path: Path) -> None:
    """One `{"text": ...}` line per window, in index order (json escapes the newlines inside a window)."""
    part = path.with_name(path.name + ".part")
    with open(part, "w", encoding="utf-8") as f:
        for start in range(0, len(store), TEXT_BATCH):
            for text in store.texts(np.arange(start, min(start + TEXT_BATCH, len(store)))):
                f.write(json.dumps({"text": text}) + "\n")
    part.replace(path)


def read_log_weights(dsir, n_windows: int) -> np.ndarray:
    """The package's per-shard log importance weights, back in line order: (n_windows,) float64."""
    out = np.full(n_windows, np.nan)
    # The same shard layout compute_importance_weights() used (a private method of the pinned version).
    for shard in dsir._get_virtually_sharded_datasets(dsir.raw_datasets):
        weights = np.load(dsir.log_importance_weights_dir / f"{shard['overall_idx']}.npy")
        lines = np.arange(shard["shard_idx"], n_windows, shard["num_shards"])
        if len(weights) != len(lines):
            raise RuntimeError(f"DSIR shard {shard['overall_idx']} holds {len(weights)} weights for {len(lines)} lines")
        out[lines] = weights
    assert not np.isnan(out).any(), "a pool window got no DSIR weight"
    return out


def wordpunct_tokenize(text: str) -> list[str]:
    """nltk's WordPunctTokenizer().tokenize: runs of word characters, runs of other non-space characters."""
    return _wordpunct_pattern().findall(text)


@functools.cache
def _wordpunct_pattern():
    import regex  # nltk's engine (installed with it)

    return regex.compile(r"\w+|[^\w\s]+", re.UNICODE | re.MULTILINE | re.DOTALL)  # RegexpTokenizer's default flags
