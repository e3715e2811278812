"""The selection stage: one method's groups, computed once and cached like every data stage.

    uniform     one group: the whole pool                      (generalist pretraining)
    specialist  one group: the specialist train windows       (specialist-only, with repetition)
    crisp       pool clusters weighted by P(c|Ds)              (crisp.py)
    doge        coarse pool clusters weighted by a proxy model (doge.py)
    ced         one group: the pool windows best scored by two small LMs' loss difference (ced.py)
    classifier  one group: the pool windows an SBERT classifier finds most specialist-like (classifier.py)
    dsir        one group: hashed n-gram importance resampling of the pool (dsir.py)

The stage folder holds `groups.npz` + `groups.json` (the Groups, its info with the method's own
cost: `aux_flops`, `aux_seconds`) and, by method, `histogram.csv` (CRISP), `scores.npy` (one
score per pool window, for the filters) or `doge_weights.npy` (DoGE's weight trajectory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crisp_pl.cache import Stage, StageCache
from crisp_pl.config import RunConfig, to_dict
from crisp_pl.selection.crisp import crisp_groups
from crisp_pl.selection.groups import Groups

NEEDS_CLUSTERS = {"crisp", "doge"}
NEEDS_EMBEDDINGS = {"crisp", "doge", "classifier"}


def specialist_subset(n_train: int, cfg: RunConfig) -> np.ndarray:
    """Indices of the specialist train windows in use (a seeded subset when capped)."""
    cap = cfg.task.max_train_windows
    if cap is None or cap >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng([cfg.task.seed, 1]).permutation(n_train)[:cap])


def selection_inputs(cfg: RunConfig, prepared) -> dict:
    """What a method's groups depend on: data keys and the settings that method reads."""
    sel = cfg.selection
    inputs = {"method": sel.method, "pool": prepared.keys["pool"]}
    if sel.method != "uniform":
        inputs.update(task=prepared.keys["task"], max_train_windows=cfg.task.max_train_windows)
    if sel.method == "crisp":
        inputs.update(tree=prepared.keys["tree"], level=cfg.cluster.level, smoothing=sel.smoothing)
    if sel.method in ("ced", "classifier", "dsir"):
        inputs.update(keep_fraction=sel.keep_fraction, seed=sel.seed)
    if sel.method == "ced":
        inputs["aux_lm"] = to_dict(sel.aux_lm)
    if sel.method == "classifier":
        inputs.update(embeddings=prepared.keys["pool_embeddings"], classifier=to_dict(sel.classifier))
    if sel.method == "dsir":
        inputs["dsir"] = {k: v for k, v in to_dict(sel.dsir).items() if k != "num_proc"}
    if sel.method == "doge":
        inputs.update(tree=prepared.keys["tree"], doge=to_dict(sel.doge), aux_lm=to_dict(sel.aux_lm), seed=sel.seed)
    return inputs


def selection_stage(cache: StageCache, cfg: RunConfig, prepared) -> Stage:
    def build(out: Path) -> None:
        groups, extras = _select(cfg, prepared, out / "work")
        groups.save(out)
        for name, value in extras.items():
            if name.endswith(".csv"):
                value.to_csv(out / name, index=False)
            else:
                np.save(out / name, value)

    return cache.run("selection", selection_inputs(cfg, prepared), build)


def _select(cfg: RunConfig, prepared, work: Path) -> tuple[Groups, dict]:
    sel, stores = cfg.selection, prepared.stores
    subset = specialist_subset(len(stores["train"]), cfg)
    specialist = stores["train"].subset(subset)
    if sel.method == "uniform":
        return Groups.single("pool", len(stores["pool"])), {}
    if sel.method == "specialist":
        return Groups("train", np.array([0, len(subset)]), subset, np.array([1.0])), {}
    if sel.method == "crisp":
        level = cfg.cluster.level
        groups, hist = crisp_groups(prepared.pool_labels[:, level], prepared.train_labels[subset, level],
                                    cfg.cluster.levels[level], sel.smoothing)
        return groups, {"histogram.csv": hist.table()}
    if sel.method == "doge":
        from crisp_pl.selection.doge import doge_groups

        level = sel.doge.level
        groups, trajectory = doge_groups(stores["pool"], prepared.pool_labels[:, level], cfg.cluster.levels[level],
                                         specialist, sel.doge, sel.aux_lm, sel.seed)
        return groups, {"doge_weights.npy": trajectory}
    if sel.method == "classifier":
        from crisp_pl.embed import load_embeddings
        from crisp_pl.selection.classifier import classifier_groups

        pool = load_embeddings(prepared.embeddings["pool"].path)
        train = load_embeddings(prepared.embeddings["train"].path)[subset]
        groups, scores = classifier_groups(pool, train, sel.classifier, sel.keep_fraction, sel.seed)
    elif sel.method == "ced":
        from crisp_pl.selection.ced import ced_groups

        groups, scores = ced_groups(stores["pool"], specialist, sel.aux_lm, sel.keep_fraction, sel.seed, work,
                                    validation_store=stores["validation"])
    else:
        from crisp_pl.selection.dsir import dsir_groups

        groups, scores = dsir_groups(stores["pool"], specialist, sel.dsir, sel.keep_fraction, sel.seed, work)
    return groups, {"scores.npy": scores}
