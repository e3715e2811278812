"""The repetition budget: capped CRISP's closed form against a general solver, and what it plans."""

import numpy as np
import pytest
from scipy.optimize import minimize

from crisp_pl.repetition import cap_weights, draws_per_window, expected_repetition, max_draws_per_window
from crisp_pl.sampling import Groups, draw, mix
from crisp_pl.selection.crisp import crisp_groups, level_scores
from crisp_pl.stages.coverage import planned_repetition


def kl(q, p):
    live = q > 0
    return float(np.sum(q[live] * np.log(q[live] / p[live])))


def solved(p, cap):
    """min KL(q || p) s.t. 0 <= q <= cap, sum q = 1, by SLSQP from a feasible start (the general solver)."""
    start = np.minimum(cap, p)
    start += (cap - start) * (1 - start.sum()) / (cap - start).sum()
    result = minimize(lambda q: kl(np.maximum(q, 1e-300), p), start, jac=lambda q: np.log(np.maximum(q, 1e-300) / p) + 1,
                      bounds=list(zip(np.zeros_like(cap), cap)), constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1,
                                                                              "jac": lambda q: np.ones_like(q)}],
                      method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    # at ftol 1e-15 SLSQP often ends on "positive directional derivative": it has reached its precision
    assert result.success or result.status == 8, result.message
    assert abs(result.x.sum() - 1) < 1e-9 and (result.x <= cap + 1e-9).all()
    return result.x


@pytest.mark.parametrize("case", range(12))
def test_the_closed_form_is_the_kl_projection(case):
    rng = np.random.default_rng(case)
    clusters = int(rng.integers(3, 9))
    sizes = rng.integers(1, 50, clusters).astype(float)
    p = rng.dirichlet(np.full(clusters, 0.5))
    draws, repeats = int(rng.integers(100, 400)), float(rng.uniform(1.0, 4.0))
    cap = repeats * sizes / draws
    if cap.sum() < 1:  # make the pool big enough for the budget: the feasible case
        sizes *= np.ceil(1 / cap.sum())
        cap = repeats * sizes / draws
    capped = cap_weights(p, sizes, draws, repeats)
    reference = solved(p, cap)
    assert not capped.infeasible and capped.weights.sum() == pytest.approx(1, abs=1e-12)
    assert (capped.weights <= cap + 1e-12).all()
    assert kl(capped.weights, p) == pytest.approx(kl(reference, p), abs=1e-9)
    assert kl(capped.weights, p) <= kl(reference, p) + 1e-12  # the solver never beats the closed form


def test_a_cap_that_does_not_bind_changes_nothing():
    p, sizes = np.array([0.1, 0.6, 0.3, 0.0]), np.array([100.0, 400.0, 200.0, 50.0])
    capped = cap_weights(p, sizes, draws=300, max_repeats=4)
    np.testing.assert_array_equal(capped.weights, p)
    assert capped.capped_groups == 0 and capped.moved_mass == 0
    # to the bit even where the target's float sum is not exactly 1 (seed 6): the same draws, so one model
    p = np.random.default_rng(6).dirichlet(np.ones(50))
    np.testing.assert_array_equal(cap_weights(p, np.full(50, 1e6), draws=300, max_repeats=4).weights, p)


def test_capped_groups_hold_the_cap_and_the_rest_keeps_its_proportions():
    p, sizes = np.array([0.7, 0.2, 0.1]), np.array([10.0, 100.0, 100.0])
    capped = cap_weights(p, sizes, draws=100, max_repeats=2)  # cap 0.2, 2, 2: only the first binds
    np.testing.assert_allclose(capped.weights, [0.2, 0.8 * 2 / 3, 0.8 / 3])
    assert capped.capped_groups == 1 and capped.moved_mass == pytest.approx(0.5)
    assert max_draws_per_window(sizes, capped.weights, 100) == pytest.approx(2.0)


def test_a_support_too_small_for_the_budget_spreads_the_rest_by_size():
    p, sizes = np.array([1.0, 0.0, 0.0]), np.array([10.0, 30.0, 60.0])
    capped = cap_weights(p, sizes, draws=100, max_repeats=2)  # cluster 0 holds 0.2 at most
    np.testing.assert_allclose(capped.weights, [0.2, 0.8 * 30 / 90, 0.8 * 60 / 90])
    assert (draws_per_window(sizes, capped.weights, 100) <= 2 + 1e-12).all()


def test_a_pool_too_small_for_the_budget_falls_back_to_uniform():
    sizes = np.array([10.0, 30.0])
    capped = cap_weights(np.array([0.9, 0.1]), sizes, draws=1000, max_repeats=4)  # 4 x 40 windows < 1000 draws
    assert capped.infeasible
    np.testing.assert_allclose(capped.weights, sizes / sizes.sum())


def test_every_cap_holds_in_the_draws():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, 4000)
    specialist = rng.integers(0, 5, 300)  # the domain sits in 5 of 40 clusters: ~100 windows for 20k draws
    groups, _ = crisp_groups(labels, specialist, 40)
    draws, repeats = 20_000, 8.0
    capped = cap_weights(groups.weights, groups.sizes, draws, repeats)
    assert capped.capped_groups == 5
    drawn = draw(Groups(groups.store, groups.offsets, groups.members, capped.weights), seed=0, rank=0, start=0, stop=draws)
    per_cluster = np.bincount(labels[drawn], minlength=40) / groups.sizes  # groups are the clusters, in order
    assert per_cluster.max() <= repeats * 1.1  # sampling noise around the expectation
    assert per_cluster.max() >= repeats * 0.9  # the capped clusters are drawn at their cap


def test_the_planned_repetition_equals_the_cap_where_it_binds():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 30, 3000)
    groups, _ = crisp_groups(labels, rng.integers(0, 3, 200), 30)
    capped = cap_weights(groups.weights, groups.sizes, 5000, 4.0)
    assert capped.capped_groups > 0
    info = capped.info(groups.weights, groups.sizes, 5000, 4.0)
    planned = planned_repetition(Groups(groups.store, groups.offsets, groups.members, capped.weights, info), 3000, 5000)
    assert planned["max_draws_per_window"] == pytest.approx(4.0)
    assert planned["uncapped_max_draws_per_window"] > 4.0
    assert planned["uncapped_expected_repetition"] > planned["expected_repetition"] > planned["uniform_repetition"]


def test_a_capped_level_score_loses_the_likelihood_only_repetition_buys():
    leaf = np.arange(64).repeat(20)
    pool = np.stack([leaf // 8, leaf], axis=1)
    spec = np.stack([np.zeros(50, int), np.zeros(50, int)], axis=1)  # everything in one leaf of 20 windows
    free = level_scores(pool, spec, spec, [8, 64])
    capped = level_scores(pool, spec, spec, [8, 64], cap=(400, 4.0))  # the leaf holds 80 of 400 draws at most
    assert free[1] > free[0]  # uncapped, the finest level predicts the validation windows best
    # capped, the leaf draws R x 20 / 400 = 0.2 of the 50 pieces' mass, then add-one over the 64 leaves
    assert capped[1] == pytest.approx(np.log((0.2 * 50 + 1) / (50 + 64) * 1280 / 20))
    assert capped[1] < free[1] and capped[0] == pytest.approx(free[0])  # the coarse level's cap does not bind


def test_a_capped_level_score_sees_a_cap_that_binds_only_before_smoothing():
    """At a fine level the add-one pseudo-counts of many clusters outweigh the few train pieces: the smoothed
    histogram sits under every cap while the histogram training draws does not. The score caps the drawn one."""
    leaf = np.arange(4096).repeat(2)
    pool = leaf[:, None]
    spec = np.repeat([0, 1, 2, 3], 10)[:, None]  # 40 pieces on 4 leaves of 2 windows
    cap = (800, 2.0)  # at most 2 x 2 / 800 = 0.005 of the draws on a leaf; the drawn histogram puts 0.25 on each
    assert (11 / (40 + 4096)) < 0.005  # the add-one histogram is under the cap everywhere
    free, capped = level_scores(pool, spec, spec, [4096]), level_scores(pool, spec, spec, [4096], cap=cap)
    assert capped[0] == pytest.approx(np.log((0.005 * 40 + 1) / (40 + 4096) * 8192 / 2))
    assert capped[0] < free[0] - 1.0


def test_a_mix_draws_its_share_from_the_specialist_store_and_counts_both():
    pool = Groups.single("pool", 1000)
    mixed = mix(pool, np.array([3, 5, 7, 9]), 0.25, pool_windows=1000)
    assert mixed.store == "pool+train" and mixed.info["mix_specialist"] == 0.25
    drawn = draw(mixed, seed=0, rank=0, start=0, stop=40_000)
    from_train = drawn >= 1000
    assert from_train.mean() == pytest.approx(0.25, abs=0.01)
    assert set(drawn[from_train] - 1000) == {3, 5, 7, 9}
    assert expected_repetition(mixed.sizes, mixed.weights, 4000) > expected_repetition(pool.sizes, pool.weights, 4000)
    with pytest.raises(ValueError, match="pool selection"):
        mix(Groups.single("train", 10), np.arange(3), 0.1, pool_windows=1000)


def test_expected_repetition_of_many_small_groups_matches_simulated_draws():
    # 200 one-window groups sharing 20% of 500 draws: each is drawn with probability 1 - (1 - 0.001)^500, not
    # surely (an estimate that gave each group its expected 0.5 draws as if certain counted more windows than draws)
    sizes = np.concatenate([np.ones(200), [1000]])
    weights = np.concatenate([np.full(200, 0.2 / 200), [0.8]])
    groups = Groups.from_labels("pool", np.concatenate([np.arange(200), np.full(1000, 200)]), weights)
    simulated = [500 / len(np.unique(draw(groups, seed=s, rank=0, start=0, stop=500))) for s in range(100)]
    assert expected_repetition(sizes, weights, 500) == pytest.approx(np.mean(simulated), rel=0.01)
