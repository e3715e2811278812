"""The unit every corpus reader yields: one document of text with its source, domain and a stable id.

A `Document` is immutable and carries no token data; tokenizing and windowing happen later
(crisp_pl.corpus.windows). `doc_id` is `"{source}:{key}"` where the key comes from the data
itself (a file path and line, a paper id, a title), so the same input gives the same ids on every
run and the task split, which hashes the ids, is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    text: str
    """The document's text (never empty or only whitespace when it comes from a reader)."""
    source: str
    """Name of the source it was read from (`SourceConfig.name`)."""
    domain: str
    """Domain label (`news`, `medical`, ...): the source's label unless the data carries its own."""
    doc_id: str
    """Stable id, unique within a corpus: `"{source}:{key}"`."""
    chars_cut: int = 0
    """Characters cut off the end by `corpus.max_chars_per_doc` (0: the document is whole), so a cap
    that shortens specialist documents is reported, never silent."""


class CorpusError(ValueError):
    """Bad corpus input: a missing or malformed file, a missing field, no documents.

    The message names the file and the 1-based line (jsonl), row (parquet / disk) or key at fault.
    """
