"""The specialist side of P(c|Ds) is embedded per document piece, not per packed window: N short
documents give N counts, and every part of a long document is seen."""

import numpy as np
import pytest

from crisp_pl.config import EmbedConfig
from crisp_pl.corpus.documents import Document
from crisp_pl.corpus.windows import build_windows
from crisp_pl.embed import load_embedder, split_for_embedder


@pytest.fixture(scope="module")
def tokenizer():
    return load_embedder(EmbedConfig(max_seq_length=16)).tokenizer


def test_a_document_is_cut_into_pieces_that_fit_the_embedder(tokenizer):
    long = " ".join(f"word{i}" for i in range(40))
    pieces, owner = split_for_embedder(["A short question?", long, "Another one."], tokenizer, 16)
    assert owner.tolist() == [0] + [1] * (len(pieces) - 2) + [2] and len(pieces) > 3
    assert pieces[0] == "A short question?" and pieces[-1] == "Another one."
    assert all(len(tokenizer(p)["input_ids"]) <= 16 for p in pieces)  # specials included
    assert " ".join(pieces[1:-1]).split() == long.split()  # the long one whole, in order, nothing lost


def test_documents_in_follows_the_packed_stream(tmp_path):
    docs = [Document(f"{i} " + "alpha beta " * n, "s", "d", f"s:{i}") for i, n in enumerate([3, 20, 2, 2, 40, 1])]
    store = build_windows(docs, tmp_path / "w", window_length=16, shard_windows=8, progress=False)
    n_tokens = store.doc_table["n_tokens"].to_numpy()
    stream = np.concatenate([[0], np.cumsum(n_tokens + (np.arange(len(docs)) > 0))])  # doc i spans stream[i]:stream[i+1]
    for window in range(len(store)):
        expected = (stream[:-1] < (window + 1) * 16) & (stream[1:] > window * 16)
        np.testing.assert_array_equal(store.documents_in([window]), expected)
    assert store.documents_in(np.arange(len(store))).sum() == sum(stream[i] < len(store) * 16 for i in range(len(docs)))
    assert not store.documents_in([]).any()


def test_the_specialist_embeddings_are_per_document_piece(tiny_prepared):
    train = tiny_prepared.stores.train
    owner = tiny_prepared.train_piece_docs
    assert len(owner) >= len(train.doc_table) and set(owner.tolist()) == set(range(len(train.doc_table)))
    assert len(tiny_prepared.train_labels) == len(owner)  # one cluster label per piece: what P(c|Ds) counts


def test_a_capped_specialist_set_counts_the_pieces_of_its_documents(tiny_config, tiny_prepared, tmp_path):
    from crisp_pl.config import build_run_config, to_dict
    from crisp_pl.selection import get_method
    from crisp_pl.stages.data import specialist_subset
    from crisp_pl.stages.selection import selection_context

    cfg = build_run_config(to_dict(tiny_config), {"task": {"max_train_windows": 10}})
    ctx = selection_context(cfg, tiny_prepared, get_method("crisp"), tmp_path)
    subset = specialist_subset(len(tiny_prepared.stores.train), cfg)
    in_use = tiny_prepared.stores.train.documents_in(subset)
    expected = np.flatnonzero(in_use[tiny_prepared.train_piece_docs])
    assert len(subset) == 10 and 0 < len(expected) < len(tiny_prepared.train_piece_docs)
    np.testing.assert_array_equal(ctx.specialist_labels, tiny_prepared.train_labels[expected])


def test_train_shares_nest_and_combine_with_the_cap(tiny_config):
    from crisp_pl.config import ConfigError, build_run_config, to_dict
    from crisp_pl.stages.data import specialist_subset, subset_inputs

    def subset(**task):
        return set(specialist_subset(160, build_run_config(to_dict(tiny_config), {"task": task})).tolist())

    sixteenth, quarter, whole = subset(train_share=1 / 16), subset(train_share=0.25), subset()
    assert (len(sixteenth), len(quarter), len(whole)) == (10, 40, 160) and sixteenth < quarter < whole
    assert subset(train_share=0.25, max_train_windows=20) < quarter and len(subset(train_share=0.25, max_train_windows=20)) == 20
    assert subset_inputs(tiny_config) == {"max_train_windows": None}  # the default leaves older cache keys as they were
    with pytest.raises(ConfigError, match="train_share"):
        build_run_config(to_dict(tiny_config), {"task": {"train_share": 0}})
