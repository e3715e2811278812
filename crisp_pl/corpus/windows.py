"""The window store: documents tokenized, joined with EOS and cut into fixed-length token windows.

Layout of a store folder (it appears all at once: it is written into a sibling temp folder and
renamed into place, replacing an older store of the same name):

    tokens-00000.npy   uint16 (n, window_length); a new shard every `shard_windows` windows
    index.parquet      one row per window: doc (row of docs.parquet holding its first token), source, domain
    docs.parquet       one row per document: doc_id, source, domain, n_tokens (without the EOS)
    meta.json          window_length, n_windows, shards, n_docs, n_tokens, n_dropped_tokens, tokenizer

The token stream is `doc0 EOS doc1 EOS doc2 ...`: the EOS between two documents counts as the
first token of the later one. Windows do not overlap, and the last, incomplete one is dropped.
Example with window_length 4: docs [a b c], [d e] -> stream a b c EOS d e -> one window
[a b c EOS] (doc 0); the tail [d e] is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.tokenizer import EOS_ID, gpt2_encoding

BATCH_DOCS = 1024
BATCH_CHARS = 4_000_000  # a tokenizer batch; bounds memory when documents are whole source files


def build_windows(docs: Iterable[Document], out_dir: Path, window_length: int, shard_windows: int,
                  encoding=None, progress: bool = True) -> WindowStore:
    """Tokenize `docs` into a window store at `out_dir` (replacing any store there) and open it."""
    if window_length < 1 or shard_windows < 1:
        raise CorpusError(f"window_length and shard_windows must be >= 1, got {window_length} and {shard_windows}")
    encoding = encoding or gpt2_encoding()
    if encoding.n_vocab > 2**16:
        raise CorpusError(f"tokenizer {encoding.name!r} has {encoding.n_vocab} ids; the store keeps uint16 tokens")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the store is an ordinary shared folder
    try:
        _write_store(docs, tmp, window_length, shard_windows, encoding, progress, label=out_dir.name)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WindowStore(out_dir, encoding)


def _write_store(docs, folder: Path, length: int, shard_windows: int, encoding, progress: bool, label: str) -> None:
    writer = _ShardWriter(folder, length, shard_windows)
    table = {"doc_id": [], "source": [], "domain": [], "n_tokens": []}
    starts = []  # stream offset of each document's first token (its leading EOS after the first)
    bar = tqdm(total=len(docs) if hasattr(docs, "__len__") else None, unit="doc", desc=f"windows {label}",
               disable=not progress, dynamic_ncols=True)
    threads = min(8, os.cpu_count() or 1)
    for batch in _batches(docs):
        flat = []
        for doc, tokens in zip(batch, encoding.encode_ordinary_batch([d.text for d in batch], num_threads=threads)):
            starts.append(writer.n_tokens + len(flat))
            if len(starts) > 1:
                flat.append(EOS_ID)
            flat.extend(tokens)
            for key, value in zip(table, (doc.doc_id, doc.source, doc.domain, len(tokens))):
                table[key].append(value)
        writer.add(np.array(flat, dtype=np.uint16))
        bar.update(len(batch))
        bar.set_postfix(tokens=f"{writer.n_tokens:,}", refresh=False)
    bar.close()
    shards = writer.close()
    n_windows = sum(s["n_windows"] for s in shards)
    if n_windows == 0:
        raise CorpusError(f"{label}: {writer.n_tokens} tokens from {len(starts)} documents do not fill one "
                          f"window of {length} tokens")
    doc_of_window = np.searchsorted(np.asarray(starts), np.arange(n_windows) * length, side="right") - 1
    _write_tables(folder, table, doc_of_window)
    meta = {"window_length": length, "n_windows": n_windows, "shards": shards, "n_docs": len(starts),
            "n_tokens": writer.n_tokens, "n_dropped_tokens": writer.n_tokens - n_windows * length,
            "tokenizer": encoding.name, "eos_id": EOS_ID, "dtype": "uint16"}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _batches(docs: Iterable[Document]) -> Iterator[list[Document]]:
    batch, chars = [], 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _ShardWriter:
    """Buffers the token stream and writes every `shard_windows` full windows as one .npy shard."""

    def __init__(self, folder: Path, length: int, shard_windows: int):
        self.folder, self.length, self.shard_windows = folder, length, shard_windows
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.n_tokens = 0  # whole stream so far
        self.shards: list[dict] = []

    def add(self, tokens: np.ndarray) -> None:
        self.pending.append(tokens)
        self.n_pending += len(tokens)
        self.n_tokens += len(tokens)
        shard_tokens = self.shard_windows * self.length
        while self.n_pending >= shard_tokens:
            stream = np.concatenate(self.pending)
            self._write(stream[:shard_tokens])
            self.pending, self.n_pending = [stream[shard_tokens:]], len(stream) - shard_tokens

    def close(self) -> list[dict]:
        """Write the last full windows; the incomplete tail is dropped."""
        full = self.n_pending // self.length * self.length
        if full:
            self._write(np.concatenate(self.pending)[:full])
        return self.shards

    def _write(self, tokens: np.ndarray) -> None:
        path = self.folder / f"tokens-{len(self.shards):05d}.npy"
        part = path.with_name(path.name + ".part")
        with open(part, "wb") as f:
            np.save(f, tokens.reshape(-1, self.length))
        os.replace(part, path)
        self.shards.append({"file": path.name, "n_windows": len(tokens) // self.length})


def _write_tables(folder: Path, table: dict, doc_of_window: np.ndarray) -> None:
    sources = pa.array(table["source"]).dictionary_encode()
    domains = pa.array(table["domain"]).dictionary_encode()
    docs = pa.table({"doc_id": table["doc_id"], "source": sources, "domain": domains,
                     "n_tokens": pa.array(table["n_tokens"], pa.int64())})
    pq.write_table(docs, folder / "docs.parquet")
    take = pa.array(doc_of_window)
    index = pa.table({"doc": pa.array(doc_of_window, pa.int64()), "source": sources.take(take),
                      "domain": domains.take(take)})
    pq.write_table(index, folder / "index.parquet")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


class WindowStore:
    """Read side of a window store folder: token windows by index, memory-mapped, plus their labels.

    `docs`, `sources`, `domains`: numpy arrays with one entry per window (doc = row of `doc_table`).
    """

    def __init__(self, path: str | Path, encoding=None):
        self.path = Path(path)
        if not (self.path / "meta.json").is_file():
            raise CorpusError(f"{self.path}: not a window store (no meta.json)")
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.window_length = int(self.meta["window_length"])
        self._shards = [np.load(self.path / s["file"], mmap_mode="r") for s in self.meta["shards"]]
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])
        index = pq.read_table(self.path / "index.parquet")
        self.docs = index.column("doc").to_numpy()
        self.sources = _strings(index.column("source"))
        self.domains = _strings(index.column("domain"))
        self._encoding = encoding
        self._doc_table = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i):
        """Window `i` as int64 (L,); a slice gives (k, L)."""
        if isinstance(i, slice):
            return self.tokens(np.arange(len(self))[i])
        return self.tokens([i])[0]

    def tokens(self, indices: Sequence[int] | np.ndarray | range) -> np.ndarray:
        """int64 (k, L) token windows, in the order of `indices` (negative indices count from the end)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"window index out of range for a store of {n} windows")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((len(idx), self.window_length), dtype=np.int64)
        shard_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self._shards[shard][idx[mask] - self._offsets[shard]]
        return out

    def texts(self, indices: Sequence[int] | np.ndarray | range) -> list[str]:
        """Decoded windows; the EOS between documents reads as a blank line ("\\n\\n")."""
        encoding = self._encoding or gpt2_encoding()
        tokens = self.tokens(indices)
        tokens[tokens == EOS_ID] = encoding.encode_single_token("\n\n")
        return encoding.decode_batch(tokens.tolist(), errors="replace")

    def subset(self, indices: Sequence[int] | np.ndarray) -> "WindowSubset":
        """A view of some of these windows with the same read API (e.g. a capped specialist set)."""
        return WindowSubset(self, np.asarray(indices, dtype=np.int64))

    @property
    def doc_table(self):
        """pandas DataFrame of the documents: doc_id, source, domain, n_tokens."""
        if self._doc_table is None:
            self._doc_table = pq.read_table(self.path / "docs.parquet").to_pandas()
        return self._doc_table


class WindowSubset:
    """Windows `indices` of a WindowStore, renumbered 0..k-1: tokens, texts and per-window labels."""

    def __init__(self, store: WindowStore, indices: np.ndarray):
        self.store, self.indices = store, indices
        self.window_length = store.window_length
        self.docs, self.sources, self.domains = store.docs[indices], store.sources[indices], store.domains[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def tokens(self, indices) -> np.ndarray:
        return self.store.tokens(self.indices[np.asarray(indices, dtype=np.int64)])

    def texts(self, indices) -> list[str]:
        return self.store.texts(self.indices[np.asarray(indices, dtype=np.int64)])


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A (dictionary-encoded) string column as a numpy str array, decoding each distinct value once."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        values = np.asarray(array.dictionary.to_pylist(), dtype=str)
        return values[array.indices.to_numpy(zero_copy_only=False)] if len(values) else np.array([], dtype=str)
    return np.asarray(array.to_pylist(), dtype=str)
