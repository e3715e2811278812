"""Every class of bad input a new user meets, one test each: a message naming the file, line or key,
and every good document of a readable file kept (counted). Damaged compression, malformed lines,
wrong types, missing fields, empty files, invalid UTF-8, a BOM and null fields are in test_corpus.py."""

from __future__ import annotations

import json
import os
import re

import pytest

from crisp_pl.config import ConfigError, SourceConfig, build_run_config, parse_set
from crisp_pl.corpus.documents import CorpusError
from crisp_pl.corpus.readers import read_source


def read(kind: str, path, **kw):
    return list(read_source(SourceConfig(name="src", kind=kind, path=str(path), **kw)))


def raises(error, match: str):
    return pytest.raises(error, match=re.escape(match))


def test_nul_bytes_in_a_text_file_name_it_as_binary(tmp_path):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "blob.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    with raises(CorpusError, f"{tmp_path / 'blob.txt'}: holds NUL bytes (at byte 4)"):
        read("text", tmp_path)


def test_nul_bytes_in_a_jsonl_line_name_the_line(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "a\x00b"}\n')
    with raises(CorpusError, f"{tmp_path / 'a.jsonl'}:2: malformed JSON"):
        read("jsonl", tmp_path / "a.jsonl")


def test_a_huge_line_is_one_document(tmp_path):
    huge = "word " * 2_000_000  # 10 MB on one line
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": huge}) + "\n" + json.dumps({"text": "small"}) + "\n")
    docs = read("jsonl", tmp_path / "a.jsonl")
    assert [len(d.text) for d in docs] == [len(huge), 5]


def test_crlf_and_blank_lines(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "one"}\r\n\r\n   \r\n{"text": "two"}\r\n')
    assert [d.text for d in read("jsonl", tmp_path / "a.jsonl")] == ["one", "two"]
    (tmp_path / "b.txt").write_bytes(b"line one\r\nline two\r\n")
    assert [d.text for d in read("text", tmp_path / "b.txt")] == ["line one\nline two\n"]  # Windows line ends read as \n


def test_wrong_container_names_the_file(tmp_path):
    (tmp_path / "a.parquet").write_text('{"text": "this is jsonl"}\n')
    with raises(CorpusError, f"{tmp_path / 'a.parquet'}: not a readable parquet file"):
        read("parquet", tmp_path / "a.parquet")
    (tmp_path / "b.jsonl.gz").write_text('{"text": "not compressed"}\n')
    with raises(CorpusError, f"{tmp_path / 'b.jsonl.gz'}: corrupt or truncated gzip file"):
        read("jsonl", tmp_path / "b.jsonl.gz")


def test_an_unreadable_parquet_names_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a"] * 1000}), tmp_path / "a.parquet")
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "a.parquet").write_bytes(data[: len(data) // 2])  # a copy cut short
    with raises(CorpusError, f"{tmp_path / 'a.parquet'}: not a readable parquet file"):
        read("parquet", tmp_path / "a.parquet")


def test_a_directory_of_the_wrong_files(tmp_path):
    (tmp_path / "notes.md").write_text("markdown, not .txt")
    with raises(CorpusError, f"no .txt files under {str(tmp_path)!r}"):
        read("text", tmp_path)


def test_a_dangling_link_is_named_not_skipped(tmp_path):
    (tmp_path / "good.txt").write_text("kept")
    os.symlink(tmp_path / "moved-away.txt", tmp_path / "link.txt")
    with raises(CorpusError, f"{tmp_path / 'link.txt'}: a link to {tmp_path / 'moved-away.txt'}, which does not exist"):
        read("text", tmp_path)
    with raises(CorpusError, f"{tmp_path / 'link.txt'}: a link to"):
        read("text", tmp_path / "*.txt")


def test_unknown_config_keys_and_out_of_range_values_name_the_key():
    with raises(ConfigError, "unknown key 'train.max_step' (known: accelerator,"):
        build_run_config(parse_set(["train.max_step=10"]))
    with raises(ConfigError, "cluster.levels: 100 is not a multiple of 8"):
        build_run_config(parse_set(["cluster.levels=[8,100]"]))
    with raises(ConfigError, "cluster.levels must be positive"):
        build_run_config(parse_set(["cluster.levels=[0]"]))


def test_a_study_or_scale_that_does_not_exist(capsys):
    from crisp_pl.cli import main

    assert main(["study", "show", "no_such_study"]) == 2
    assert "no study 'no_such_study'" in capsys.readouterr().err
    assert main(["study", "show", "quickstart", "--scale", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
