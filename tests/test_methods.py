"""The contract every registered selection method keeps, on the shared tiny fixture (medical is the
specialist domain and about 41% of the pool), and a toy method registered from this file alone."""

import numpy as np
import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.sampling import Groups, draw
from crisp_pl.selection import get_method, method_names, register, unregister
from crisp_pl.stages import selection_stage
from crisp_pl.study import load_study, points

# Small auxiliary models: the contract holds at any size, and this keeps the test fast.
FAST = {"aux_lm": {"steps": 30, "batch_size": 8, "max_score_windows": 300},
        **{f: {"keep_fraction": 0.2} for f in ("ced", "classifier", "dsir")},
        "doge": {"level": 0, "specialist_batch": 4}}
TARGETED = {"crisp", "crisp_auto", "ced", "classifier", "dsir", "doge"}
DRAWS = 20_000


def selected(cfg, prepared, method: str) -> Groups:
    cfg = build_run_config(to_dict(cfg), {"selection": {**FAST, "method": method}})
    return Groups.load(selection_stage(StageCache(f"{cfg.results_dir}/cache"), cfg, prepared).path)


def test_the_paper_methods_are_registered():
    assert {"uniform", "specialist"} | TARGETED <= set(method_names())
    assert all(get_method(name).targeted for name in TARGETED | {"specialist"}) and not get_method("uniform").targeted


@pytest.mark.parametrize("method", method_names())
def test_every_method_keeps_the_contract(method, tiny_config, tiny_prepared):
    groups = selected(tiny_config, tiny_prepared, method)
    store = tiny_prepared.stores[groups.store]
    assert groups.store in ("pool", "train")
    assert (groups.weights >= 0).all() and np.isclose(groups.weights.sum(), 1.0)  # a distribution over groups
    assert groups.members.min() >= 0 and groups.members.max() < len(store)  # every index in range
    assert len(groups.members) == groups.offsets[-1] and (np.diff(groups.offsets) >= 0).all()

    if method in TARGETED:  # it raises the specialist domain's share of what is drawn above its share of the pool
        is_medical = tiny_prepared.stores.pool.domains == "medical"
        drawn = draw(groups, seed=0, rank=0, start=0, stop=DRAWS)
        assert is_medical[drawn].mean() > is_medical.mean() + 0.05, (is_medical[drawn].mean(), is_medical.mean())


@pytest.fixture
def toy_method():
    """A method that keeps the first half of the pool, registered from this test file only."""

    @register("toy_first_half", settings=lambda cfg: {"seed": cfg.selection.seed}, targeted=False)
    def select(ctx):
        """The first half of the pool, in two equally weighted groups."""
        half = len(ctx.pool) // 2
        ctx.artifacts["order.npy"] = ctx.rng("toy.order").permutation(half)
        return Groups("pool", [0, half // 2, half], np.arange(half), [0.5, 0.5], {"kept_windows": half})

    yield "toy_first_half"
    unregister("toy_first_half")


def test_a_method_registered_in_a_test_needs_no_other_change(toy_method, tiny_config, tiny_prepared, tmp_path):
    cfg = build_run_config(to_dict(tiny_config), {"selection": {"method": toy_method}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    stage = selection_stage(cache, cfg, tiny_prepared)
    groups = Groups.load(stage.path)
    assert groups.sizes.sum() == len(tiny_prepared.stores.pool) // 2 and groups.info == {"kept_windows": groups.sizes.sum()}
    assert (stage.path / "order.npy").is_file()
    assert selection_stage(cache, cfg, tiny_prepared) == stage  # cached under its own key
    other_seed = build_run_config(to_dict(cfg), {"selection": {"seed": 1}})
    assert selection_stage(cache, other_seed, tiny_prepared).key != stage.key  # its declared settings are in the key

    study = tmp_path / "toy.yaml"
    study.write_text(f"name: toy\ngrid:\n  selection.method: [{toy_method}, uniform]\n")
    assert [p.config.selection.method for p in points(load_study(str(study)))] == [toy_method, "uniform"]


def test_an_unknown_method_is_a_config_error_at_plan_time(tmp_path):
    from crisp_pl.config import ConfigError

    study = tmp_path / "typo.yaml"
    study.write_text("name: typo\ngrid:\n  selection.method: [crips]\n")
    with pytest.raises(ConfigError, match="selection.method must be one of .*got 'crips'"):
        points(load_study(str(study)))
