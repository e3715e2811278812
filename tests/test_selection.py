import numpy as np
import pytest

from crisp_pl.sampling import Groups
from crisp_pl.selection import crisp_groups, histogram


def test_histogram_and_importance_weights_exact():
    pool = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])  # P(c|Dg) = .3 .2 .5 0
    spec = np.array([0, 1, 1, 1])  # P(c|Ds) = .25 .75 0 0
    h = histogram(pool, spec, num_clusters=4)
    np.testing.assert_allclose(h.p_generalist, [0.3, 0.2, 0.5, 0.0])
    np.testing.assert_allclose(h.p_specialist, [0.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(h.importance_weights, [0.25 / 0.3, 0.75 / 0.2, 0.0, 0.0])
    assert h.dropped_mass == 0.0
    assert list(h.table().columns) == ["cluster", "generalist_windows", "specialist_pieces", "p_generalist", "p_specialist", "importance_weight"]


def test_specialist_mass_on_empty_clusters_is_dropped_and_reported():
    pool = np.array([0, 0, 1])
    spec = np.array([0, 2, 2, 2])  # cluster 2 has no generalist window
    h = histogram(pool, spec, num_clusters=3)
    assert h.dropped_mass == pytest.approx(0.75)
    np.testing.assert_allclose(h.p_specialist, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="no specialist window falls"):
        histogram(pool, np.array([2, 2]), num_clusters=3)


def test_smoothing_spreads_mass_over_reachable_clusters_only():
    h = histogram(np.array([0, 1, 2]), np.array([0, 0, 3]), num_clusters=4, smoothing=1.0)
    np.testing.assert_allclose(h.p_specialist, [3 / 5, 1 / 5, 1 / 5, 0.0])


def test_crisp_groups_are_the_pool_clusters():
    pool = np.array([2, 0, 2, 1, 0])
    groups, _ = crisp_groups(pool, np.array([2, 2, 0]), 3)
    assert groups.store == "pool"
    np.testing.assert_array_equal(groups.sizes, [2, 1, 2])
    for g, members in enumerate(np.split(groups.members, groups.offsets[1:-1])):
        assert (pool[members] == g).all()
    np.testing.assert_allclose(groups.weights, [1 / 3, 0, 2 / 3])
    assert groups.info["dropped_mass"] == 0.0 and groups.info["clusters_sampled"] == 2


def test_groups_validate_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="sum to 1"):
        Groups("pool", [0, 1, 2], [0, 1], [0.5, 0.6])
    with pytest.raises(ValueError, match="empty group"):
        Groups("pool", [0, 0, 2], [0, 1], [0.5, 0.5])
    g = Groups.single("train", 5, {"x": 1})
    g.save(tmp_path)
    back = Groups.load(tmp_path)
    assert back.store == "train" and back.info == {"x": 1}
    np.testing.assert_array_equal(back.members, np.arange(5))


def test_level_scores_prefer_the_level_that_predicts_held_out_specialist_windows():
    from crisp_pl.selection.crisp import level_scores

    rng = np.random.default_rng(0)
    leaf = np.arange(64).repeat(20)  # the pool: 20 windows in each of 64 leaves; parents of 8 and of 32 leaves
    pool = np.stack([leaf // 32, leaf // 8, leaf], axis=1)

    def specialist(n):  # the domain: uniform over the 16 leaves under level-1 clusters 0 and 1
        leaves = rng.integers(0, 16, n)
        return np.stack([leaves // 32, leaves // 8, leaves], axis=1)

    scores = level_scores(pool, specialist(10), specialist(200), [2, 8, 64])
    # level 0 cannot tell the domain from half the pool; 10 train pieces leave most of level 2's 16 leaves empty
    assert np.argmax(scores) == 1 and scores[1] > scores[0] and scores[1] > scores[2]
    plenty = level_scores(pool, specialist(5000), specialist(200), [2, 8, 64])
    assert np.allclose(plenty[1:], np.log(4.0), atol=0.05)  # with data enough, levels 1 and 2 both find w = 4 over the domain
