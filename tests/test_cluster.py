"""Hierarchical k-means on constructed Gaussian blobs whose clusters are known, with real faiss and torch."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crisp_pl.cluster import ClusterError, ClusterTree, _fit_children, check_levels, kmeans, resolve_backend
from crisp_pl.config import ClusterConfig

BACKENDS = ["faiss", "torch"]


def blobs(n_blobs: int = 8, per_blob: int = 300, d: int = 48, spread: float = 0.02, seed: int = 0):
    """Points (n, d) float32 around unit-norm random centers, and the blob of each point."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_blobs, d))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)  # centers ~1.4 apart, blob radius ~0.14
    y = np.repeat(np.arange(n_blobs), per_blob)
    return (centers[y] + spread * rng.normal(size=(len(y), d))).astype(np.float32), y


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when labelings a and b group the points identically (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def digest(tree: ClusterTree) -> str:
    return hashlib.sha256(b"".join(c.tobytes() for c in tree.centroids)).hexdigest()


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module", params=BACKENDS)
def tree(request, data):
    x, _ = data
    return ClusterTree.fit(x, ClusterConfig(levels=[8, 32, 128], backend=request.param, seed=3), progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kmeans_recovers_the_blobs(data, backend):
    x, y = data
    centroids = kmeans(x, 8, niter=20, seed=0, backend=backend)
    assert centroids.shape == (8, 48) and centroids.dtype == np.float32
    labels = ((x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert same_partition(labels, y)  # purity 1.0 and every blob its own cluster


def test_tree_level0_is_the_blobs_and_levels_nest(tree, data):
    x, y = data
    labels = tree.labels_
    assert labels.shape == (len(x), 3) and tree.levels == [8, 32, 128]
    assert same_partition(labels[:, 0], y)
    for level in (1, 2):
        np.testing.assert_array_equal(labels[:, level] // tree.branch(level), labels[:, level - 1])
    assert all(v.all() for v in tree.valid)  # 300 points per blob: no parent needs padding


def test_assign_reproduces_the_fit(tree, data):
    x, _ = data
    np.testing.assert_array_equal(tree.assign(x), tree.labels_)
    np.testing.assert_array_equal(tree.assign(x, batch_size=97), tree.labels_)  # batching changes nothing
    np.testing.assert_array_equal(tree.assign(x.astype(np.float16)), tree.assign(x.astype(np.float16), batch_size=50))


def test_save_load_round_trip(tree, data, tmp_path):
    x, _ = data
    path = tmp_path / "tree.npz"
    tree.save(path)
    loaded = ClusterTree.load(path)
    assert loaded.levels == tree.levels and digest(loaded) == digest(tree)
    np.testing.assert_array_equal(loaded.assign(x), tree.labels_)
    assert [p.name for p in tmp_path.iterdir()] == ["tree.npz"]  # the temp file was renamed


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_per_seed(data, backend):
    x = data[0][:1200]
    cfg = ClusterConfig(levels=[4, 16], backend=backend, seed=7)
    first = ClusterTree.fit(x, cfg, progress=False)
    assert digest(ClusterTree.fit(x, cfg, progress=False)) == digest(first)
    other = ClusterTree.fit(x, ClusterConfig(levels=[4, 16], backend=backend, seed=8), progress=False)
    assert digest(other) != digest(first)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from test_cluster import blobs, digest;"
            "from crisp_pl.cluster import ClusterTree; from crisp_pl.config import ClusterConfig;"
            f"print(digest(ClusterTree.fit(blobs()[0][:1200], ClusterConfig(levels=[4, 16], backend={backend!r}, seed=7), progress=False)))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert fresh.strip() == digest(first)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_parents_are_padded_and_padding_never_assigned(backend):
    big, _ = blobs(n_blobs=1, per_blob=400, d=16, seed=1)
    rng = np.random.default_rng(2)
    tiny = (5.0 + rng.normal(size=(2, 16))).astype(np.float32)  # far away: its own parent of 2 points
    x = np.concatenate([big, tiny])
    tree = ClusterTree.fit(x, ClusterConfig(levels=[2, 8], backend=backend), progress=False)
    p = int(tree.labels_[-1, 0])
    assert (tree.labels_[:-2, 0] != p).all()
    slots = slice(4 * p, 4 * p + 4)
    np.testing.assert_array_equal(tree.valid[1][slots], [True, True, False, False])
    children = tree.centroids[1][slots]
    np.testing.assert_array_equal(children[2:], children[:2])  # copies of the real children
    assert sorted(tree.labels_[-2:, 1].tolist()) == [4 * p, 4 * p + 1]  # each point is its own child
    queries = (5.0 + rng.normal(size=(500, 16))).astype(np.float32)  # new points under that parent
    assigned = np.concatenate([tree.assign(queries)[:, 1], tree.assign(x)[:, 1]])
    assert tree.valid[1][assigned].all()


def test_empty_parent_gets_copies_of_its_centroid():
    above = np.arange(12, dtype=np.float32).reshape(3, 4)
    cfg = ClusterConfig(levels=[3, 12])
    children, valid = _fit_children(above, np.array([], dtype=np.int64), 4, above, 1, cfg, np.random.default_rng(0), "torch")
    np.testing.assert_array_equal(children, np.repeat(above[1:2], 4, axis=0))
    np.testing.assert_array_equal(valid, [True, False, False, False])


def test_errors_name_cluster_levels(data):
    x = data[0][:100]
    with pytest.raises(ClusterError, match=r"cluster\.levels\[0\].*more clusters than windows"):
        ClusterTree.fit(x, ClusterConfig(levels=[128]), progress=False)
    with pytest.raises(ClusterError, match=r"cluster\.levels\[-1\].*more clusters than windows"):
        ClusterTree.fit(x, ClusterConfig(levels=[4, 128]), progress=False)
    cfg = ClusterConfig(levels=[4, 16])
    cfg.levels = [4, 10]  # edited after validation
    with pytest.raises(ClusterError, match=r"cluster\.levels.*not a multiple"):
        ClusterTree.fit(x, cfg, progress=False)
    with pytest.raises(ClusterError, match="cluster.levels"):
        check_levels([], 10)
    with pytest.raises(ClusterError, match="cluster.backend"):
        resolve_backend("cuml")
    with pytest.raises(ClusterError):
        kmeans(x, 101)


def test_auto_backend_on_this_machine():
    import torch

    expected = "torch" if torch.cuda.is_available() else "faiss"  # faiss-cpu here: no faiss GPU
    assert resolve_backend("auto") in (expected, "faiss-gpu")


def test_a_batched_level_fit_clusters_as_well_as_one_kmeans_per_parent():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, 32)).astype(np.float32)
    x = (centers[rng.integers(64, size=6000)] + 0.3 * rng.standard_normal((6000, 32))).astype(np.float32)
    x[:5] = x[0]  # a few duplicates
    trees = {fit: ClusterTree.fit(x, ClusterConfig(levels=[4, 64, 256], niter=10, fit=fit), progress=False)
             for fit in ("per_parent", "batched")}
    sse = {}
    for fit, tree in trees.items():
        labels = tree.assign(x)
        assert (labels == tree.labels_).all()  # the fit's own top-down assignment
        assert ((labels[:, 1] // 16) == labels[:, 0]).all() and ((labels[:, 2] // 4) == labels[:, 1]).all()
        sse[fit] = [float(((x - tree.centroids[level][labels[:, level]]) ** 2).sum()) for level in (1, 2)]
    np.testing.assert_array_equal(trees["batched"].centroids[0], trees["per_parent"].centroids[0])  # level 0: one fit either way
    assert all(b <= 1.1 * p for b, p in zip(sse["batched"], sse["per_parent"])), sse  # as tight, within 10%
    from crisp_pl import cluster

    small = dict(cluster._BLOCK, cpu=100_000)  # a few parents a block instead of all: the same draws, the same tree
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster, "_BLOCK", small)
        again = ClusterTree.fit(x, ClusterConfig(levels=[4, 64, 256], niter=10, fit="batched"), progress=False)
    np.testing.assert_allclose(again.centroids[2], trees["batched"].centroids[2], atol=1e-5)


def test_the_auto_level_fit_is_the_per_parent_loop_on_cpu_and_keeps_the_tree_s_cache_key(tmp_path):
    import torch

    from crisp_pl.cache import CacheEntry, StageCache
    from crisp_pl.cluster import resolve_fit
    from crisp_pl.config import build_run_config, stable_hash
    from crisp_pl.stages.data import tree_stage

    assert not torch.cuda.is_available() and resolve_fit("auto") == "per_parent" and resolve_fit("batched") == "batched"
    x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    assert ClusterTree.fit(x, ClusterConfig(levels=[2, 4], niter=2), progress=False).fit_ == "per_parent"

    class Planned(StageCache):  # the key each config would build under, without building
        def run(self, stage, inputs, build, collective=False):
            return CacheEntry(stage, stable_hash(inputs), tmp_path)

    embeddings = CacheEntry("embeddings", "abc", tmp_path)
    keys = {fit: tree_stage(Planned(tmp_path), build_run_config({"cluster": {"fit": fit}}), embeddings).key
            for fit in ("auto", "per_parent", "batched")}
    assert keys["auto"] == keys["per_parent"] != keys["batched"]  # trees fitted before `auto` keep their keys on CPU
