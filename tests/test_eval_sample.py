"""Capped evaluations score a seeded, stratified sample, never the first N items in load order."""

import numpy as np
import pytest

from crisp_pl import seeds
from crisp_pl.evaluate.sample import stratified_sample


def test_a_cap_spreads_over_strata_in_proportion():
    strata = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)  # load order: all of a first, as MMLU by subject
    picked = stratified_sample(strata, 20, seeds.rng(0, "test"))
    assert len(picked) == 20 and len(np.unique(picked)) == 20 and (np.diff(picked) > 0).all()
    assert {k: int((strata[picked] == k).sum()) for k in "abc"} == {"a": 12, "b": 6, "c": 2}
    assert picked.max() >= 60  # a prefix would hold only stratum a


def test_largest_remainders_fill_the_cap():
    strata = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    picked = stratified_sample(strata, 5, seeds.rng(0, "test"))  # quotas 2.5, 1.5, 1.0
    # floors 2, 1, 1; the one left goes to the largest remainder, a tie of a and b broken by label
    assert {k: int((strata[picked] == k).sum()) for k in "abc"} == {"a": 3, "b": 1, "c": 1}


def test_same_seed_same_items_and_no_cap_keeps_all():
    strata = np.repeat(np.arange(7), 13)
    one = stratified_sample(strata, 30, seeds.rng(5, "eval"))
    np.testing.assert_array_equal(one, stratified_sample(strata, 30, seeds.rng(5, "eval")))
    assert not np.array_equal(one, stratified_sample(strata, 30, seeds.rng(6, "eval")))
    np.testing.assert_array_equal(stratified_sample(strata, None, seeds.rng(0, "eval")), np.arange(len(strata)))
    np.testing.assert_array_equal(stratified_sample(strata, 10_000, seeds.rng(0, "eval")), np.arange(len(strata)))
    with pytest.raises(ValueError, match=">= 1"):
        stratified_sample(strata, 0, seeds.rng(0, "eval"))
