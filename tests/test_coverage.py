"""The coverage diagnostic on embeddings whose geometry is known: a domain inside the pool and one far from it."""

import numpy as np
import pytest

from crisp_pl.cluster import ClusterTree
from crisp_pl.config import ClusterConfig
from crisp_pl.coverage import coverage, verdict
from crisp_pl.repetition import expected_repetition


def _blobs(rng, centers, n, spread):
    rows = centers[rng.integers(len(centers), size=n)] + spread * rng.standard_normal((n, centers.shape[1]))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)


@pytest.fixture(scope="module")
def pool_and_tree():
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((16, 32))
    pool = _blobs(rng, topics, 4000, 0.15)
    tree = ClusterTree.fit(pool.astype(np.float32), ClusterConfig(levels=[4, 16], niter=10), progress=False)
    return rng, topics, pool, tree


def _diagnose(pool, tree, specialist):
    labels, spec_labels = tree.assign(pool.astype(np.float32)), tree.assign(specialist.astype(np.float32))
    return coverage(pool, specialist, labels[:, 1], spec_labels[:, 1], tree.centroids[1], np.random.default_rng(1))


def test_a_domain_drawn_from_pool_topics_is_covered_and_a_far_one_is_not(pool_and_tree):
    rng, topics, pool, tree = pool_and_tree
    inside = _diagnose(pool, tree, _blobs(rng, topics[:2], 300, 0.15))  # two of the pool's own topics
    far = _diagnose(pool, tree, _blobs(rng, rng.standard_normal((3, 32)), 300, 0.15))  # topics the pool never saw

    assert inside.metrics["nearest_ratio"] > 0.95 and far.metrics["nearest_ratio"] < 0.7
    assert inside.metrics["specialist_centroid_median"] > far.metrics["specialist_centroid_median"]
    assert 1.5 < inside.metrics["effective_clusters"] < 3  # two topics: about two clusters
    assert verdict(inside.metrics).startswith("the pool covers this domain:")
    assert verdict(far.metrics).startswith("the pool holds little close to this domain")
    assert inside.verdict == verdict(inside.metrics)
    rows = far.rows
    assert (rows["set"] == "specialist").sum() == 300 and (rows["set"] == "pool").sum() == 2000
    assert rows["nearest"].between(-1.001, 1.001).all()


def test_pool_yardstick_excludes_each_window_itself(pool_and_tree):
    _, _, pool, tree = pool_and_tree
    found = _diagnose(pool, tree, pool[:100])  # the specialist rows are pool rows: their nearest is themselves
    assert found.metrics["specialist_nearest_median"] == pytest.approx(1.0, abs=1e-3)
    assert found.metrics["pool_nearest_median"] < 0.999  # a pool window's nearest *other* window


def test_catch_all_mass_alone_gives_the_uncovered_verdict():
    metrics = {"specialist_nearest_median": 0.6, "pool_nearest_median": 0.64, "nearest_ratio": 0.94,
               "general_specialist_mass": 0.63, "general_pool_mass": 0.2, "general_clusters": 2,
               "effective_clusters": 3.0, "clusters": 64}
    assert verdict(metrics).startswith("the pool holds little close")
    assert verdict(dict(metrics, general_specialist_mass=0.45)).startswith("the pool covers this domain in part")


def test_expected_repetition_matches_simulated_draws():
    sizes, weights, draws = np.array([10, 1000, 0]), np.array([0.5, 0.5, 0.0]), 400
    rng = np.random.default_rng(0)
    simulated = []
    for _ in range(200):
        g = rng.choice(3, size=draws, p=weights)
        distinct = len(set(zip(g, [rng.integers(sizes[k]) for k in g])))
        simulated.append(draws / distinct)
    assert expected_repetition(sizes, weights, draws) == pytest.approx(np.mean(simulated), rel=0.02)
    assert expected_repetition(np.array([10**6]), np.array([1.0]), 10) == pytest.approx(1.0, abs=1e-4)


def test_the_torch_search_finds_what_faiss_finds():
    """The GPU machine has no faiss: there the nearest neighbours come from `_search_torch`, the same exact search."""
    import faiss

    from crisp_pl.coverage import _search_torch

    rng = np.random.default_rng(3)
    reference = rng.standard_normal((3000, 48)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    queries = np.concatenate([reference[:100], rng.standard_normal((200, 48)).astype(np.float32)])
    index = faiss.IndexFlatIP(48)
    index.add(reference)
    want_scores, want_ids = index.search(queries, 2)
    scores, ids = _search_torch(reference, queries, 2)
    assert (ids == want_ids).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert _search_torch(reference, queries[:0], 2)[0].shape == (0, 2)
