"""Shared fixtures: one small real dataset through the real data stages, built once per test worker."""

import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config

# Medical documents are the specialist domain; the pool mixes medical (the part of the domain the task
# does not use: `domain_in_pool`), encyclopedic leads and Python code, so a selector that works keeps
# mostly medical windows.
TINY_DATA = {
    "corpus": {
        "window_length": 64,
        "max_chars_per_doc": 1500,
        "sources": [
            {"name": "medical", "max_docs": 300},
            {"name": "wiki", "max_docs": 200},
            {"name": "python_stdlib", "max_docs": 12},
        ],
    },
    "task": {"name": "medical", "sources": ["medical"], "train_fraction": 0.3, "validation_fraction": 0.1, "test_fraction": 0.2,
             "domain_in_pool": True},
    "embed": {"max_seq_length": 48, "batch_size": 32},
    "cluster": {"levels": [4, 16], "niter": 8},
    "model": {"size": "micro"},
    "train": {"max_steps": 12, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 4, "val_every": 6, "log_every": 2},
    "eval": {"batch_size": 16, "max_windows": 32},
}


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """The RunConfig of the shared tiny dataset, its results under a per-worker temporary folder."""
    return build_run_config(TINY_DATA, {"results_dir": str(tmp_path_factory.mktemp("tiny_results"))})


@pytest.fixture(scope="session")
def tiny_prepared(tiny_config):
    """Windows, embeddings, tree and labels of the tiny dataset (crisp_pl.stages.Prepared)."""
    from crisp_pl.stages import prepare

    cache = StageCache(f"{tiny_config.results_dir}/cache")
    return prepare(cache, tiny_config, need_validation_clusters=True)  # embeddings, tree, every label (crisp_auto scores validation)
