"""The window store: documents tokenized, joined with EOS and cut into fixed-length token windows.

Layout of a store folder (it appears all at once: it is written into a sibling temp folder and
renamed into place, replacing an older store of the same name):

    tokens-00000.npy   uint16 (n, window_length); a new shard every `shard_windows` windows
    index.parquet      one row per window: doc (row of docs.parquet holding its first token), source, domain
    docs.parquet       one row per document: doc_id, source, domain, n_tokens (without the EOS)
    meta.json          window_length, n_windows, shards, n_docs, n_tokens, n_dropped_tokens, tokenizer (its name),
                       eos_id, vocab_size
    tokenizer.json     the tokenizer's spec (crisp_pl.corpus.tokenizer): the store decodes itself

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
from crisp_pl.progress import bar as progress_bar

from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.tokenizer import Tokenizer, gpt2_tokenizer, load_tokenizer, save_tokenizer

BATCH_DOCS = 1024
BATCH_CHARS = 4_000_000  # a tokenizer batch; bounds memory when documents are whole source files


def build_windows(docs: Iterable[Document], out_dir: Path, window_length: int, shard_windows: int,
                  tokenizer: Tokenizer | None = None, progress: bool = True) -> WindowStore:
    """Tokenize `docs` into a window store at `out_dir` (replacing any store there) and open it.
    `tokenizer`: GPT-2's when None."""
    if window_length < 1 or shard_windows < 1:
        raise CorpusError(f"window_length and shard_windows must be >= 1, got {window_length} and {shard_windows}")
    tokenizer = tokenizer or gpt2_tokenizer()
    if tokenizer.vocab_size > 2**16:
        raise CorpusError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids; the store keeps uint16 tokens")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the store is an ordinary shared folder
    try:
        _write_store(docs, tmp, window_length, shard_windows, tokenizer, progress, label=out_dir.name)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WindowStore(out_dir, tokenizer)


def _write_store(docs, folder: Path, length: int, shard_windows: int, tokenizer: Tokenizer, progress: bool,
                 label: str) -> None:
    writer = _ShardWriter(folder, length, shard_windows)
    table = {"doc_id": [], "source": [], "domain": [], "n_tokens": []}
    starts = []  # stream offset of each document's first token (its leading EOS after the first)
    bar = progress_bar(total=len(docs) if hasattr(docs, "__len__") else None, unit="doc", desc=f"windows {label}",
               disable=not progress, dynamic_ncols=True)
    for batch in _batches(docs):
        flat = []
        for doc, tokens in zip(batch, tokenizer.encode_batch([d.text for d in batch])):
            starts.append(writer.n_tokens + len(flat))
            if len(starts) > 1:
                flat.append(tokenizer.eos_id)
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
            "tokenizer": tokenizer.name, "eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size, "dtype": "uint16"}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    save_tokenizer(tokenizer, folder / "tokenizer.json")


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

    def __init__(self, path: str | Path, tokenizer: Tokenizer | None = None):
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
        self._tokenizer = tokenizer
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

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer that wrote this store (its `tokenizer.json`; GPT-2 for a store written before it had one)."""
        if self._tokenizer is None:
            path = self.path / "tokenizer.json"
            self._tokenizer = load_tokenizer(path) if path.is_file() else gpt2_tokenizer()
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Ids of the store's tokenizer: every token is below it."""
        return int(self.meta.get("vocab_size") or self.tokenizer.vocab_size)

    def texts(self, indices: Sequence[int] | np.ndarray | range) -> list[str]:
        """Decoded windows; the EOS between documents reads as a blank line ("\\n\\n")."""
        tokenizer = self.tokenizer
        tokens = self.tokens(indices)
        blank = tokenizer.encode("\n\n")
        if len(blank) == 1:
            tokens[tokens == tokenizer.eos_id] = blank[0]
            return tokenizer.decode_batch(tokens.tolist())
        rows = [row if tokenizer.eos_id not in row else [t for x in row for t in (blank if x == tokenizer.eos_id else (x,))]
                for row in tokens.tolist()]
        return tokenizer.decode_batch(rows)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "WindowSubset":
        """A view of some of these windows with the same read API (e.g. a capped specialist set)."""
        return WindowSubset(self, np.asarray(indices, dtype=np.int64))

    @property
    def doc_table(self):
        """pandas DataFrame of the documents: doc_id, source, domain, n_tokens."""
        if self._doc_table is None:
            self._doc_table = pq.read_table(self.path / "docs.parquet").to_pandas()
        return self._doc_table

    def documents_in(self, windows: Sequence[int] | np.ndarray) -> np.ndarray:
        """(n_docs,) bool: which documents have a token in any of `windows` (documents can span windows,
        and short ones share a window). Uses the stream layout: each document after the first starts
        with an EOS, then its `n_tokens` tokens."""
        n_tokens = self.doc_table["n_tokens"].to_numpy()
        lengths = n_tokens + (np.arange(len(n_tokens)) > 0)  # the EOS before every document but the first
        ends = np.cumsum(lengths)  # (n_docs,) stream offset one past each document
        starts = ends - lengths
        first = starts // self.window_length
        last = (np.maximum(ends, starts + 1) - 1) // self.window_length
        chosen = np.zeros(len(self), dtype=np.int64)
        chosen[np.asarray(windows, dtype=np.int64)] = 1
        covered = np.concatenate([[0], np.cumsum(chosen)])  # covered[w] = chosen windows before w
        last = np.minimum(last, len(self) - 1)  # the incomplete tail window was dropped
        return (first <= last) & (covered[last + 1] - covered[first] > 0)


class WindowSubset:
    """Windows `indices` of a WindowStore, renumbered 0..k-1: tokens, texts and per-window labels."""

    def __init__(self, store: WindowStore, indices: np.ndarray):
        self.store, self.indices = store, indices
        self.window_length = store.window_length
        self.docs, self.sources, self.domains = store.docs[indices], store.sources[indices], store.domains[indices]
        self.tokenizer, self.vocab_size = store.tokenizer, store.vocab_size

    def __len__(self) -> int:
        return len(self.indices)

    def tokens(self, indices) -> np.ndarray:
        return self.store.tokens(self.indices[np.asarray(indices, dtype=np.int64)])

    def texts(self, indices) -> list[str]:
        return self.store.texts(self.indices[np.asarray(indices, dtype=np.int64)])


class JoinedStores:
    """Two stores of one tokenizer read as one: windows 0..len(first)-1 are `first`'s, the rest `second`'s
    (a pretraining draw that mixes specialist windows into the pool's: crisp_pl.sampling.mix)."""

    def __init__(self, first: WindowStore, second: WindowStore):
        self.parts, self.split = (first, second), len(first)
        self.window_length = first.window_length
        self.docs = np.concatenate([first.docs, second.docs])  # each part's own doc numbering
        self.sources, self.domains = np.concatenate([first.sources, second.sources]), np.concatenate([first.domains, second.domains])
        self.tokenizer, self.vocab_size = first.tokenizer, max(first.vocab_size, second.vocab_size)

    def __len__(self) -> int:
        return self.split + len(self.parts[1])

    def _read(self, indices, read) -> list:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        second = idx >= self.split
        out = [None] * len(idx)
        for part, mask, offset in ((self.parts[0], ~second, 0), (self.parts[1], second, self.split)):
            if mask.any():
                for position, row in zip(np.flatnonzero(mask), read(part, idx[mask] - offset)):
                    out[position] = row
        return out

    def tokens(self, indices) -> np.ndarray:
        rows = self._read(indices, lambda part, idx: part.tokens(idx))
        return np.stack(rows) if rows else np.empty((0, self.window_length), np.int64)

    def texts(self, indices) -> list[str]:
        return self._read(indices, lambda part, idx: part.texts(idx))


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A (dictionary-encoded) string column as a numpy str array, decoding each distinct value once."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        values = np.asarray(array.dictionary.to_pylist(), dtype=str)
        return values[array.indices.to_numpy(zero_copy_only=False)] if len(values) else np.array([], dtype=str)
    return np.asarray(array.to_pylist(), dtype=str)
