"""The contract every registered selection method keeps, on the shared tiny fixture (medical is the
specialist domain and about 41% of the pool), and a toy method registered from this file alone."""

import numpy as np
import pytest

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config, to_dict
from crisp_pl.repetition import draws_per_window
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


# Variants the contract also covers: capped CRISP and its level choice (at a cap that binds at the fixture's few draws) and the
# specialist mix, alone and together.
VARIANTS = {"crisp capped": ("crisp", {"crisp": {"max_repeats": 0.1}}),
            "crisp_auto capped": ("crisp_auto", {"crisp": {"max_repeats": 0.1}}),
            "uniform + mix": ("uniform", {"mix": {"specialist": 0.2}}),
            "crisp capped + mix": ("crisp", {"crisp": {"max_repeats": 0.1}, "mix": {"specialist": 0.2}})}


def selected(cfg, prepared, method: str, settings: dict | None = None) -> Groups:
    cfg = build_run_config(to_dict(cfg), {"selection": {**FAST, **(settings or {}), "method": method}})
    return Groups.load(selection_stage(StageCache(f"{cfg.results_dir}/cache"), cfg, prepared).path)


def test_the_paper_methods_are_registered():
    assert {"uniform", "specialist"} | TARGETED <= set(method_names())
    assert all(get_method(name).targeted for name in TARGETED | {"specialist"}) and not get_method("uniform").targeted


@pytest.mark.parametrize("method", [*method_names(), *VARIANTS])
def test_every_method_keeps_the_contract(method, tiny_config, tiny_prepared):
    method, settings = VARIANTS.get(method, (method, {}))
    groups = selected(tiny_config, tiny_prepared, method, settings)
    store = tiny_prepared.stores[groups.store]
    assert groups.store in ("pool", "train", "pool+train")
    assert (groups.weights >= 0).all() and np.isclose(groups.weights.sum(), 1.0)  # a distribution over groups
    assert groups.members.min() >= 0 and groups.members.max() < len(store)  # every index in range
    assert len(groups.members) == groups.offsets[-1] and (np.diff(groups.offsets) >= 0).all()

    if method in TARGETED or settings:  # it raises the specialist domain's share of what is drawn above its share of the pool
        pool_medical = (tiny_prepared.stores.pool.domains == "medical").mean()
        drawn = draw(groups, seed=0, rank=0, start=0, stop=DRAWS)
        assert (store.domains[drawn] == "medical").mean() > pool_medical + 0.05, ((store.domains[drawn] == "medical").mean(), pool_medical)
    if "crisp" in settings:  # no pool window above the cap in expectation at the planned draws, and the cap was needed
        assert groups.info["uncapped_max_draws_per_window"] > 0.1 and groups.info["cap_infeasible"] == 0
        share = settings.get("mix", {}).get("specialist", 0.0)
        pool_groups = slice(0, groups.num_groups - (share > 0))  # a mix's last group is the specialist windows
        per_window = draws_per_window(groups.sizes[pool_groups], groups.weights[pool_groups], groups.info["pool_draws"] / (1 - share))
        assert per_window.max() == pytest.approx(0.1)


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


def test_a_model_is_keyed_by_its_draws_so_a_cap_that_does_not_bind_trains_no_second_model(tiny_config, tiny_prepared):
    from crisp_pl.stages.training import draw_inputs, train_stage

    cache = StageCache(f"{tiny_config.results_dir}/cache")

    def config(settings, **train):  # the cap plans against the point's draws: 0.1 binds at the fixture's steps
        return build_run_config(to_dict(tiny_config), {"selection": {"method": "crisp", **settings}, "train": train})

    uncapped, loose = (config(s, max_steps=2) for s in ({}, {"crisp": {"max_repeats": 1e6}}))
    tight = config({"crisp": {"max_repeats": 0.1}})
    selections = [selection_stage(cache, cfg, tiny_prepared) for cfg in (uncapped, loose, tight)]
    assert len({s.key for s in selections}) == 3  # three selections, planned differently
    draws = [draw_inputs(Groups.load(s.path), tiny_prepared) for s in selections]
    assert draws[0] == draws[1] != draws[2]  # the loose cap draws what CRISP draws; the tight one does not
    model = train_stage(cache, uncapped, tiny_prepared, selections[0])
    assert train_stage(cache, loose, tiny_prepared, selections[1]).path == model.path
