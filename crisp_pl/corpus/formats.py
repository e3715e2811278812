"""File formats: find a file source's files and read them, row by row or whole.

The kinds (`SourceConfig.kind`) that read a user's files:

    jsonl    one JSON object per line (RedPajama / Pile dumps); `.jsonl`, `.jsonl.gz`, `.jsonl.zst`
    parquet  row groups read in batches through pyarrow, never the whole file at once
    disk     a `datasets.save_to_disk` folder (a DatasetDict gives its "train" split)
    text     plain `.txt` files, one document per file

`cfg.path` may be a file, a folder (every file of the kind under it, sorted) or a glob
(`expand`). The row readers (`ROW_READERS`) yield `(where, number, row)`: `where` names the file
and the 1-based line (jsonl) or row (parquet / disk) for error messages, `number` is that line or
row. Bad input (a missing, empty, corrupt or non-UTF-8 file, malformed JSON, a missing column)
raises `CorpusError` naming the file and line or row. What a row means (its text and domain
fields) is crisp_pl.corpus.readers' business.

pyarrow, datasets and zstandard are imported only when a file needs them.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from crisp_pl.config import SourceConfig
from crisp_pl.corpus.documents import CorpusError

SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",), "text": (".txt",)}
PARQUET_BATCH_ROWS = 1024

Rows = Iterator[tuple[str, int, dict]]


def expand(cfg: SourceConfig) -> list[Path]:
    """The source's files (folders for `disk`), sorted; a folder stands for the files of the kind under it."""
    pattern = os.path.expanduser(cfg.path)
    matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
    for m in matches:
        _check_link(Path(m))
    matches = [Path(m) for m in matches if os.path.exists(m)]
    if not matches:
        raise CorpusError(f"source {cfg.name!r}: no file matches path {cfg.path!r}")
    if cfg.kind == "disk":
        return matches
    files = []
    for match in matches:
        if match.is_dir():
            found = sorted(p for p in match.rglob("*") if p.name.endswith(SUFFIXES[cfg.kind]))
            for p in found:
                _check_link(p)
            files += [p for p in found if p.is_file()]
        else:
            files.append(match)
    if not files:
        raise CorpusError(f"source {cfg.name!r}: no {'/'.join(SUFFIXES[cfg.kind])} files under {cfg.path!r}")
    return files


def _check_link(path: Path) -> None:
    """A link whose target is gone is a moved or deleted file: say so, rather than read the corpus without it."""
    if path.is_symlink() and not path.exists():
        raise CorpusError(f"{path}: a link to {os.readlink(path)}, which does not exist (moved or deleted?)")


def short_names(files: list[Path]) -> list[str]:
    """File names relative to the files' common folder: short, and unique for distinct files."""
    if len(files) == 1:
        return [files[0].name]
    paths = [os.path.abspath(f) for f in files]
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [Path(os.path.relpath(p, root)).as_posix() for p in paths]


def read_text(path: Path) -> str:
    """A whole `.txt` file as UTF-8 text; a leading byte-order mark and Windows line ends (both common
    in files saved on Windows) read as the text without them."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    if not data:
        _empty(path)
    nul = data.find(b"\0")
    if nul >= 0:  # text never holds NUL: a binary file (an archive, a PDF) named .txt
        raise CorpusError(f"{path}: holds NUL bytes (at byte {nul}): a binary file, not UTF-8 text")
    return _decode(data, path).replace("\r\n", "\n")


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


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, decompressed (`.gz`, `.zst`); damaged compression raises CorpusError."""
    if path.name.endswith(".zst"):
        yield from _split_lines(_zstd_chunks(path))
        return
    with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as f:
        try:
            yield from f
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise CorpusError(f"{path}: corrupt or truncated gzip file ({error}); nothing after the damage can be read") from None


def _zstd_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed chunks of every zstd frame of `path`. zstandard's stream reader stops quietly at a cut
    frame, losing what followed the last complete block; here a file that ends inside a frame is an error."""
    try:
        import zstandard
    except ImportError:
        raise CorpusError(f"{path}: reading .zst needs the `zstandard` package (pip install zstandard)") from None
    decompressor, frame = zstandard.ZstdDecompressor(), None
    with open(path, "rb") as f:
        try:
            while data := f.read(size):
                while data:
                    frame = frame or decompressor.decompressobj()
                    yield frame.decompress(data)
                    data = frame.unused_data if frame.eof else b""
                    frame = None if frame.eof else frame
        except zstandard.ZstdError as error:
            raise CorpusError(f"{path}: not a valid zstd file, or damaged ({error})") from None
    if frame is not None:
        raise CorpusError(f"{path}: truncated zstd file (it ends inside a frame); nothing after the cut can be read")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line + b"\n" for line in lines)
    if rest:
        yield rest


# --- row readers: (where, number, row) -----------------------------------------------------------


def jsonl_rows(path: Path, cfg: SourceConfig) -> Rows:
    """(where, line number, row) for every non-blank line; the line number is 1-based."""
    seen_any, offset = False, 0
    for number, raw in enumerate(_lines(path), 1):
        where = f"{path}:{number}"
        if number == 1 and raw.startswith(codecs.BOM_UTF8):  # a byte-order mark (files saved on Windows)
            raw, offset = raw[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
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


def parquet_rows(path: Path, cfg: SourceConfig) -> Rows:
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


def disk_rows(path: Path, cfg: SourceConfig) -> Rows:
    dataset = load_from_disk(path)
    columns = _check_columns(path, dataset.column_names, cfg)
    if len(dataset) == 0:
        _empty(path)
    number = 0
    for batch in dataset.select_columns(columns).iter(batch_size=PARQUET_BATCH_ROWS):
        for values in zip(*(batch[c] for c in columns)):
            number += 1
            yield f"{path} row {number}", number, dict(zip(columns, values))


ROW_READERS: dict[str, Callable[[Path, SourceConfig], Rows]] = {"jsonl": jsonl_rows, "parquet": parquet_rows, "disk": disk_rows}


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
