"""The cpu scale is the paper's regime: a pool many times what a model draws. Checked from the configs
and the window counts of the real cpu pools (tests/data/cpu_regime.json, written by scripts/cpu_regime.py
from a cache where the quickstart ran at the cpu scale), without building anything."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scripts.cpu_regime import MANIFEST, PROGRAMME
from crisp_pl.corpus.builtin import BUILTIN_SOURCES
from crisp_pl.corpus.mcq import MCQ_SETS
from crisp_pl.plan import pool_stages
from crisp_pl.repetition import expected_repetition, max_draws_per_window
from crisp_pl.study import load_study, points
from crisp_pl.training.batch import planned_draws

REGIME = json.loads(MANIFEST.read_text())
REGENERATE = "the cpu pool or tree changed: rerun the quickstart at the cpu scale, then `python -m scripts.cpu_regime`"
DEBIAN = {"python_docs"}  # apt, not the package index: never required by the cpu scale


def _draws(cfg) -> int:
    return planned_draws(cfg.train, cfg.corpus.window_length)


@pytest.fixture(scope="module")
def programme() -> list[tuple[str, object]]:
    """(study name, point) of every group of the programme's studies at the cpu scale, resolved once."""
    return [(name, point) for name in PROGRAMME for point in points(load_study(name), "cpu")]


def test_the_cpu_pool_is_every_package_index_source_whole(programme):
    for name, point in programme:
        corpus = point.config.corpus
        assert corpus.max_chars_per_doc is None and corpus.max_docs_per_source is None, name
        assert all(source.max_docs is None for source in corpus.sources), name
        assert {s.name for s in corpus.sources} == set(BUILTIN_SOURCES) - set(MCQ_SETS) - DEBIAN, name


def test_uniform_barely_repeats_and_crisp_at_64_clusters_stays_under_4_draws_a_window():
    by_method = {p.config.selection.method: p.config for p in points(load_study("quickstart"), "cpu")}
    uniform, crisp = by_method["uniform"], by_method["crisp"]
    pool = dict(pool_stages(uniform, "unused"))["pool"]
    assert pool.key in REGIME["pools"], REGENERATE
    windows = REGIME["pools"][pool.key]
    assert windows * uniform.corpus.window_length >= 18e6  # the whole corpus: 72,250 windows of 256 tokens
    assert expected_repetition(np.array([windows]), np.array([1.0]), _draws(uniform)) <= 1.1

    selected = REGIME["quickstart_crisp"]
    assert dict(pool_stages(crisp, "unused"))["tree"].key == selected["tree"], REGENERATE
    assert crisp.cluster.levels[crisp.cluster.level] == selected["clusters"] == 64
    sizes, weights = np.array(selected["sizes"]), np.array(selected["weights"])
    assert sizes.sum() == windows and weights.sum() == pytest.approx(1.0)
    assert expected_repetition(sizes, weights, _draws(crisp)) <= 4.0
    assert max_draws_per_window(sizes, weights, _draws(crisp)) <= 4.0


def test_every_full_pool_of_the_programme_is_20_times_what_its_models_draw(programme):
    checked = 0
    for name, point in programme:
        cfg = point.config
        pool = dict(pool_stages(cfg, "unused"))["pool"]
        if cfg.corpus.pool_fraction < 1 or pool.key not in REGIME["pools"]:
            continue  # generalist_size shrinks the pool on purpose; a pool not yet built has no count
        assert REGIME["pools"][pool.key] >= 20 * _draws(cfg), f"{name} {point.name}"  # fine-tuning draws the task's windows
        checked += 1
    assert checked >= 40  # the quickstart's pool serves most of the programme
