"""Read one configured source (`SourceConfig`) into `Document`s.

`cfg.kind` picks where the documents come from:

    builtin                       an installed offline source (crisp_pl.corpus.builtin), picked by `cfg.name`
    jsonl, parquet, disk, text    the user's files, found and read by crisp_pl.corpus.formats

A row of a jsonl / parquet / disk file becomes a document through `text_field` and `domain_field`,
which may be dotted paths into nested rows, e.g. the Pile's `domain_field: meta.pile_set_name`;
a `.txt` file is one document. Documents with blank text are skipped; bad input raises
`CorpusError` naming the file and the 1-based line (jsonl) or row (parquet / disk).

Document ids are `"{source}:{file}:{line}"` (`{file}` relative to the matched files' common
folder), so they are stable as long as the files are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace

from crisp_pl.config import SourceConfig
from crisp_pl.corpus.builtin import BUILTIN_SOURCES
from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.formats import ROW_READERS, expand, read_text, short_names


def read_source(cfg: SourceConfig, max_docs: int | None = None, max_chars: int | None = None) -> Iterator[Document]:
    """Yield the source's non-blank documents in file order, at most `max_docs`, each cut to `max_chars`."""
    if max_docs is not None and max_docs < 1:
        raise CorpusError(f"source {cfg.name!r}: max_docs must be >= 1, got {max_docs}")
    docs = _builtin_docs(cfg) if cfg.kind == "builtin" else _file_docs(cfg)
    count = 0
    with closing(docs):  # close files promptly when max_docs stops us early
        for doc in docs:
            if not doc.text.strip():
                continue
            if max_chars is not None and len(doc.text) > max_chars:
                doc = replace(doc, text=doc.text[:max_chars], chars_cut=len(doc.text) - max_chars)
            count += 1
            yield doc
            if count == max_docs:
                return
    if count == 0:
        raise CorpusError(f"source {cfg.name!r} ({cfg.path or cfg.kind}): yielded no documents (empty, or only blank texts)")


def _builtin_docs(cfg: SourceConfig) -> Iterator[Document]:
    if cfg.name not in BUILTIN_SOURCES:
        raise CorpusError(f"source {cfg.name!r}: no builtin of that name (builtins: {', '.join(BUILTIN_SOURCES)})")
    for doc in BUILTIN_SOURCES[cfg.name]():
        yield replace(doc, domain=cfg.domain) if cfg.domain else doc


def _file_docs(cfg: SourceConfig) -> Iterator[Document]:
    files = expand(cfg)
    for path, name in zip(files, short_names(files)):
        if cfg.kind == "text":
            yield Document(read_text(path), cfg.name, cfg.domain or cfg.name, f"{cfg.name}:{name}")
            continue
        for where, number, row in ROW_READERS[cfg.kind](path, cfg):
            doc = _row_doc(cfg, row, where, f"{cfg.name}:{name}:{number}")
            if doc is not None:
                yield doc


def _row_doc(cfg: SourceConfig, row: dict, where: str, doc_id: str) -> Document | None:
    """The row's document; None for a blank text (skipped, so its domain need not exist either). A null
    text is an error (a missing document is not a blank one); a null domain field is missing, not the
    string "None": the source's own domain applies."""
    text = _field(row, cfg.text_field, where)
    if text is None:
        raise CorpusError(f"{where}: field {cfg.text_field!r} is null (NoneType), expected a string")
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {cfg.text_field!r} is {type(text).__name__}, expected a string")
    if not text.strip():
        return None
    domain = _field(row, cfg.domain_field, where) if cfg.domain_field else None
    if cfg.id_field:  # the row's own id, so a split by id survives reordering the files
        own = _field(row, cfg.id_field, where)
        if own is None or isinstance(own, (dict, list)) or (isinstance(own, str) and not own.strip()):
            raise CorpusError(f"{where}: field {cfg.id_field!r} (the id_field) is {own!r}, expected a string or number")
        doc_id = f"{cfg.name}:{own}"
    return Document(text, cfg.name, str(domain) if domain is not None else cfg.domain or cfg.name, doc_id)


def _field(row: dict, dotted: str, where: str):
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            known = ", ".join(sorted(map(str, value))[:12]) if isinstance(value, dict) else type(value).__name__
            raise CorpusError(f"{where}: no field {dotted!r} (has: {known})")
        value = value[part]
    return value
