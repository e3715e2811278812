"""The corpus as a whole (`load_corpus`) and its split into a specialist task and the generalist pool.

`split_task` gives each specialist document a number u in [0, 1) from a hash of (task seed,
doc_id). With `split: fractions` it files the document under train if u < train_fraction, else
validation, else test; the rest of the domain is filed under `pool` (the generalist pool uses it
only with `task.domain_in_pool`; by default the whole domain is held out, see crisp_pl.stages.data).
Because a document's split depends only on its own id, capping or growing the corpus never moves
a document from one split to another. With `split: halves` (the MCQ tasks, as in the paper) the
half of the domain with the smallest u is the test set and the other half the train set, of
which a `validation_fraction` share (by a second hash) is held out for validation.
A multitask (`task.components`) splits each component's documents by that component's own rule
and seed, so its ARC-Easy test half is exactly the single ARC-Easy task's.

Documents whose source or domain is in `holdout` (corpus.holdout, plus the task's own extra
sources) never join the pool: in a multi-task study every task's documents are held out, so all
tasks share one pool, and its embeddings and tree are computed once.

A name in `task.sources` matches a document's source or its domain label, so the medical task
can take the `wiki` source's `encyclopedic_biology` leads without the rest of the wiki:

    TaskConfig(name="medical", sources=["medical", "encyclopedic_biology"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Iterator

from crisp_pl.config import CorpusConfig, TaskConfig
from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.readers import read_source

SPLITS = ("pool", "train", "validation", "test")


def load_corpus(corpus: CorpusConfig, progress: bool = True) -> list[Document]:
    """Every source's documents, in config order, with the corpus caps applied; doc_ids must be unique."""
    return list(iter_corpus(corpus, progress))


def iter_corpus(corpus: CorpusConfig, progress: bool = True) -> Iterator[Document]:
    """`load_corpus` as a stream: memory bounded by the largest document (and the set of ids seen), not the corpus."""
    if not corpus.sources:
        raise CorpusError("corpus.sources is empty")
    owner: dict[str, str] = {}
    for source in corpus.sources:
        caps = [c for c in (corpus.max_docs_per_source, source.max_docs) if c is not None]
        start, count, chars, cut, dropped = time.perf_counter(), 0, 0, 0, 0
        for doc in read_source(source, max_docs=min(caps) if caps else None, max_chars=corpus.max_chars_per_doc):
            if doc.doc_id in owner:
                raise CorpusError(f"duplicate doc_id {doc.doc_id!r} (sources {owner[doc.doc_id]!r} and "
                                  f"{source.name!r}); give every source a distinct name")
            owner[doc.doc_id] = source.name
            count, chars = count + 1, chars + len(doc.text)
            cut, dropped = cut + bool(doc.chars_cut), dropped + doc.chars_cut
            yield doc
        if progress:
            shortened = f"; {cut:,} cut to max_chars_per_doc={corpus.max_chars_per_doc:,} ({dropped / 1e6:.2f} M chars dropped)" if cut else ""
            print(f"corpus: {source.name:<16} {count:>8,} docs {chars / 1e6:8.2f} M chars "
                  f"({time.perf_counter() - start:.1f} s){shortened}", file=sys.stderr, flush=True)


def load_task_documents(corpus: CorpusConfig, task: TaskConfig, progress: bool = True) -> list[Document]:
    """The task's documents (every component's) from the corpus, streamed so the rest of the corpus is
    never held, plus the task's own extra sources: these are read whole (only their own `max_docs`
    applies), since capping an MCQ set at the corpus caps would silently change its halves."""
    parts, seen = task.components or [task], set()
    docs = []
    for doc in iter_corpus(corpus, progress):
        seen |= {doc.source, doc.domain}
        if any(_matches(doc, part) for part in parts):
            docs.append(doc)
    extra = dataclasses.replace(corpus, sources=task.extra_sources, max_docs_per_source=None, max_chars_per_doc=None)
    docs += load_corpus(extra, progress) if task.extra_sources else []
    for part in parts:
        if not any(_matches(doc, part) for doc in docs):
            raise CorpusError(f"task {part.name!r}: no document has a source or domain in task.sources={part.sources} "
                              f"(corpus has: {', '.join(sorted(seen | {d.source for d in docs} | {d.domain for d in docs}))})")
    return docs


def split_task(docs: list[Document], task: TaskConfig, holdout: list[str] = ()) -> dict[str, list[Document]]:
    """{"pool", "train", "validation", "test"} -> documents; disjoint, each in input order."""
    held = set(holdout) | {s.name for s in task.extra_sources}
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    chosen = {}
    for part in task.components or [task]:  # a multitask splits each component by its own rule
        mine = [doc for doc in docs if _matches(doc, part)]
        chosen.update((_halves if part.split == "halves" else _fractions)(mine, part))
    for doc in docs:
        name = chosen.get(doc.doc_id, "pool")
        if name != "pool" or (doc.source not in held and doc.domain not in held):
            splits[name].append(doc)
    for part in task.components or [task]:
        _check({name: [d for d in split if _matches(d, part)] for name, split in splits.items()}, part, docs)
    return splits


def _matches(doc: Document, task: TaskConfig) -> bool:
    return doc.source in task.sources or doc.domain in task.sources


def _fractions(docs: list[Document], task: TaskConfig) -> dict[str, str]:
    cut_train = task.train_fraction
    cut_validation = cut_train + task.validation_fraction
    cut_test = cut_validation + task.test_fraction
    out = {}
    for doc in docs:
        u = unit_hash(task.seed, doc.doc_id)
        out[doc.doc_id] = ("train" if u < cut_train else "validation" if u < cut_validation
                           else "test" if u < cut_test else "pool")
    return out


def _halves(docs: list[Document], task: TaskConfig) -> dict[str, str]:
    ranked = sorted(docs, key=lambda d: unit_hash(task.seed, d.doc_id))
    out = {d.doc_id: "test" for d in ranked[: len(ranked) // 2]}
    for doc in ranked[len(ranked) // 2:]:
        out[doc.doc_id] = "validation" if unit_hash(task.seed + 1, doc.doc_id) < task.validation_fraction else "train"
    return out


def unit_hash(salt: int | str, doc_id: str) -> float:
    """A document's fixed number in [0, 1) under `salt` (a split seed, or `pool` for the pool's fractions)."""
    digest = hashlib.sha256(f"{salt}\0{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check(splits: dict[str, list[Document]], task: TaskConfig, docs: list[Document]) -> None:
    matched = sum(len(split) for split in splits.values())
    if matched == 0:
        have = sorted({d.source for d in docs} | {d.domain for d in docs})
        raise CorpusError(f"task {task.name!r}: no document has a source or domain in task.sources={task.sources} "
                          f"(corpus has: {', '.join(have)})")
    for name in ("train", "test"):
        if not splits[name]:
            raise CorpusError(f"task {task.name!r}: the {name} split is empty ({matched} documents match "
                              f"task.sources={task.sources}, {name}_fraction={getattr(task, name + '_fraction')})")
    ids = {name: {d.doc_id for d in split} for name, split in splits.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not ids[a] & ids[b], f"splits {a} and {b} share documents"
