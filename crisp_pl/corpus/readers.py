"""Read one configured source (`SourceConfig`) into `Document`s.

Kinds, picked by `cfg.kind`:

    jsonl    one JSON object per line (RedPajama / Pile dumps); `.jsonl`, `.jsonl.gz`, `.jsonl.zst`
    parquet  row groups read in batches through pyarrow, never the whole file at once
    disk     a `datasets.save_to_disk` folder (a DatasetDict gives its "train" split)
    text     plain `.txt` files, one document per file
    builtin  an installed offline source (crisp_pl.corpus.builtin), picked by `cfg.name`

`cfg.path` may be a file, a folder (every file of the kind under it, sorted) or a glob.
`text_field` and `domain_field` may be dotted paths into nested rows, e.g. the Pile's
`domain_field: meta.pile_set_name`. Documents with blank text are skipped; bad input raises
`CorpusError` naming the file and the 1-based line (jsonl) or row (parquet / disk).

Document ids are `"{source}:{file}:{line}"` (`{file}` relative to the matched files' common
folder), so they are stable as long as the files are.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from crisp_pl.config import SourceConfig
from crisp_pl.corpus.documents import CorpusError, Document

SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",), "text": (".txt",)}
PARQUET_BATCH_ROWS = 1024


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
                doc = replace(doc, text=doc.text[:max_chars])
            count += 1
            yield doc
            if count == max_docs:
                return
    if count == 0:
        raise CorpusError(f"source {cfg.name!r} ({cfg.path or cfg.kind}): yielded no documents (empty, or only blank texts)")


def _builtin_docs(cfg: SourceConfig) -> Iterator[Document]:
    from crisp_pl.corpus.builtin import BUILTIN_SOURCES  # lazy: builtins pull in heavier packages

    if cfg.name not in BUILTIN_SOURCES:
        raise CorpusError(f"source {cfg.name!r}: no builtin of that name (builtins: {', '.join(BUILTIN_SOURCES)})")
    for doc in BUILTIN_SOURCES[cfg.name]():
        yield replace(doc, domain=cfg.domain) if cfg.domain else doc


def _file_docs(cfg: SourceConfig) -> Iterator[Document]:
    files = _expand(cfg)
    for path, name in zip(files, _short_names(files)):
        if cfg.kind == "text":
            yield _text_doc(cfg, path, f"{cfg.name}:{name}")
            continue
        rows = {"jsonl": _jsonl_rows, "parquet": _parquet_rows, "disk": _disk_rows}[cfg.kind](path, cfg)
        for where, number, row in rows:
            doc = _row_doc(cfg, row, where, f"{cfg.name}:{name}:{number}")
            if doc is not None:
                yield doc


def _text_doc(cfg: SourceConfig, path: Path, doc_id: str) -> Document:
    data = path.read_bytes()
    if not data:
        _empty(path)
    return Document(_decode(data, path), cfg.name, cfg.domain or cfg.name, doc_id)


def _row_doc(cfg: SourceConfig, row: dict, where: str, doc_id: str) -> Document | None:
    """The row's document; None for a blank text (skipped, so its domain need not exist either)."""
    text = _field(row, cfg.text_field, where)
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {cfg.text_field!r} is {type(text).__name__}, expected a string")
    if not text.strip():
        return None
    domain = _field(row, cfg.domain_field, where) if cfg.domain_field else cfg.domain or cfg.name
    return Document(text, cfg.name, str(domain), doc_id)


def _field(row: dict, dotted: str, where: str):
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            known = ", ".join(sorted(map(str, value))[:12]) if isinstance(value, dict) else type(value).__name__
            raise CorpusError(f"{where}: no field {dotted!r} (has: {known})")
        value = value[part]
    return value


# --- files ---------------------------------------------------------------------------------------


def _expand(cfg: SourceConfig) -> list[Path]:
    """The source's files (folders for `disk`), sorted; a folder stands for the files of the kind under it."""
    pattern = os.path.expanduser(cfg.path)
    matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
    matches = [Path(m) for m in matches if os.path.exists(m)]
    if not matches:
        raise CorpusError(f"source {cfg.name!r}: no file matches path {cfg.path!r}")
    if cfg.kind == "disk":
        return matches
    files = []
    for match in matches:
        if match.is_dir():
            files += sorted(p for p in match.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES[cfg.kind]))
        else:
            files.append(match)
    if not files:
        raise CorpusError(f"source {cfg.name!r}: no {'/'.join(SUFFIXES[cfg.kind])} files under {cfg.path!r}")
    return files


def _short_names(files: list[Path]) -> list[str]:
    """File names relative to the files' common folder: short, and unique for distinct files."""
    if len(files) == 1:
        return [files[0].name]
    paths = [os.path.abspath(f) for f in files]
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def _empty(path: Path) -> None:
    raise CorpusError(f"{path}: empty file")


def _decode(data: bytes, path: Path, line: int | None = None, offset: int = 0) -> str:
    """UTF-8 text of `data` (which starts at byte `offset` of `path`); errors name the line and byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = line if line is not None else data.count(b"\n", 0, error.start) + 1
        bad = data[error.start:error.start + 4]
        raise CorpusError(f"{path}:{line}: not valid UTF-8 at byte offset {offset + error.start} ({bad!r})") from None


def _open_bytes(path: Path):
    name = path.name
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise CorpusError(f"{path}: reading .zst needs the `zstandard` package (pip install zstandard)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True))
    return open(path, "rb")


def _jsonl_rows(path: Path, cfg: SourceConfig) -> Iterator[tuple[str, int, dict]]:
    """(where, line number, row) for every non-blank line; the line number is 1-based."""
    seen_any, offset = False, 0
    try:
        with _open_bytes(path) as f:
            for number, raw in enumerate(f, 1):
                where = f"{path}:{number}"
                line = _decode(raw, path, number, offset)
                offset += len(raw)
                if not line.strip():
                    continue
                seen_any = True
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise CorpusError(f"{where}: malformed JSON ({error.msg} at column {error.colno})") from None
                if not isinstance(row, dict):
                    raise CorpusError(f"{where}: expected a JSON object, got {type(row).__name__}")
                yield where, number, row
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CorpusError(f"{path}: corrupt or truncated compressed file ({error})") from None
    if not seen_any:
        _empty(path)


def _columns(cfg: SourceConfig) -> list[str]:
    """Top-level columns to read: the roots of the (possibly dotted) text and domain fields."""
    fields = [cfg.text_field] + ([cfg.domain_field] if cfg.domain_field else [])
    return list(dict.fromkeys(f.split(".")[0] for f in fields))


def _check_columns(path: Path, have: list[str], cfg: SourceConfig) -> list[str]:
    columns = _columns(cfg)
    for column in columns:
        if column not in have:
            raise CorpusError(f"{path}: no field {column!r} (columns: {', '.join(have[:12])})")
    return columns


def _parquet_rows(path: Path, cfg: SourceConfig) -> Iterator[tuple[str, int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise CorpusError(f"{path}: not a readable parquet file ({error})") from None
    columns = _check_columns(path, parquet.schema_arrow.names, cfg)
    if parquet.metadata.num_rows == 0:
        _empty(path)
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            number += 1
            yield f"{path} row {number}", number, row


def _disk_rows(path: Path, cfg: SourceConfig) -> Iterator[tuple[str, int, dict]]:
    dataset = load_from_disk(path)
    columns = _check_columns(path, dataset.column_names, cfg)
    if len(dataset) == 0:
        _empty(path)
    number = 0
    for batch in dataset.select_columns(columns).iter(batch_size=PARQUET_BATCH_ROWS):
        for values in zip(*(batch[c] for c in columns)):
            number += 1
            yield f"{path} row {number}", number, dict(zip(columns, values))


def load_from_disk(path: Path):
    """A `datasets.save_to_disk` folder, offline; a DatasetDict gives its "train" split."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: never reach for the hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise CorpusError(f"{path}: not a datasets.save_to_disk folder ({error})") from None
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise CorpusError(f"{path}: a DatasetDict without a 'train' split (splits: {', '.join(dataset)}); "
                              "point `path` at one split's folder")
        dataset = dataset["train"]
    return dataset
