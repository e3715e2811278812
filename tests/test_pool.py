"""What the generalist pool holds: the task's domain held out by default, `domain_in_pool` as the named
exception, and `corpus.pool_fraction` subsampling the pool alone, nested, without moving the task."""

import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config
from crisp_pl.stages.data import pool_stage, task_stage
from crisp_pl.corpus.windows import WindowStore

DATA = {
    "corpus": {"window_length": 64, "max_chars_per_doc": 800,
               "sources": [{"name": "medical", "max_docs": 80}, {"name": "wiki", "max_docs": 80}]},
    "task": {"name": "medical", "sources": ["medical"], "train_fraction": 0.2, "validation_fraction": 0.1, "test_fraction": 0.2},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return StageCache(tmp_path_factory.mktemp("pool") / "cache")


def pool_docs(entry) -> set[str]:
    return set(WindowStore(entry.path / "pool").doc_table["doc_id"])


def test_the_task_domain_is_held_out_unless_asked(cache):
    held = pool_stage(cache, build_run_config(DATA))
    domains = set(WindowStore(held.path / "pool").domains)
    assert "medical" not in domains and domains  # the default: separate generalist and specialist corpora
    inside = pool_stage(cache, build_run_config(DATA, {"task": {"domain_in_pool": True}}))
    assert "medical" in set(WindowStore(inside.path / "pool").domains) and inside.key != held.key
    # the task's split is the same either way
    assert task_stage(cache, build_run_config(DATA)).key == task_stage(cache, build_run_config(DATA, {"task": {"domain_in_pool": True}})).key


def test_pool_fraction_subsamples_the_pool_only_and_nests(cache):
    full, half, quarter = (build_run_config(DATA, {"corpus": {"pool_fraction": f}}) for f in (1.0, 0.5, 0.25))
    docs = {f: pool_docs(pool_stage(cache, cfg)) for f, cfg in ((1.0, full), (0.5, half), (0.25, quarter))}
    assert docs[0.25] < docs[0.5] < docs[1.0]
    assert 0.3 < len(docs[0.5]) / len(docs[1.0]) < 0.7
    assert task_stage(cache, half).key == task_stage(cache, full).key  # the test set never moves
    with pytest.raises(Exception, match="pool_fraction"):
        build_run_config(DATA, {"corpus": {"pool_fraction": 0.0}})
