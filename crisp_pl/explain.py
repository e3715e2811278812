"""What a user asks before and after training: can the pool serve my domain (`crisp coverage NAME`),
and what did CRISP select (`crisp inspect RUN`)?

`coverage_report` runs only the data stages and CRISP's selection for each distinct specialist set of a
study (the tree level its CRISP points weight, uniform and baselines taken as CRISP at the config's
level), all cached and shared with `crisp study run`, and returns the diagnostic of crisp_pl.coverage.

`inspect_run` reads a finished CRISP run's stages back from the cache through the keys its MLflow
run carries (its `stages.json` artifact): its histogram, the pool's window store and cluster labels.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from crisp_pl import seeds
from crisp_pl.config import ConfigError, RunConfig, cache_root
from crisp_pl.corpus.tokenizer import load_tokenizer
from crisp_pl.corpus.windows import WindowStore
from crisp_pl.coverage import repetition, verdict
from crisp_pl.sampling import Groups
from crisp_pl.stages.coverage import COVERAGE_METHODS, coverage_metrics, coverage_stage, planned_repetition
from crisp_pl.stages.data import prepare
from crisp_pl.stages.selection import selection_stage
from crisp_pl.training.batch import planned_draws


def coverage_report(runner) -> list[tuple[str, dict[str, float]]]:
    """[(what, metrics)] for each distinct specialist set and level of the study's points (`runner`: a StudyRunner)."""
    out, seen, groups_seen = [], set(), set()
    for point in runner.points:
        if point.group in groups_seen:
            continue  # another seed of a point already reported: the same specialist set, pool and tree
        groups_seen.add(point.group)
        cfg: RunConfig = point.config
        if cfg.selection.method not in COVERAGE_METHODS:
            cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection, method="crisp"))
        prepared = prepare(runner.cache, cfg, need_clusters=True, need_validation_clusters=cfg.selection.method == "crisp_auto")
        selection = selection_stage(runner.cache, cfg, prepared)
        groups = Groups.load(selection.path)
        level = int(groups.info.get("chosen_level", cfg.cluster.level)) % len(cfg.cluster.levels)
        entry = coverage_stage(runner.cache, cfg, prepared, level)
        if (entry.key, selection.key, cfg.train.max_steps) in seen:  # the same set, distribution and budget
            continue
        seen.add((entry.key, selection.key, cfg.train.max_steps))
        capped = f", at most {cfg.selection.crisp.max_repeats:g} draws a window" if cfg.selection.crisp.max_repeats else ""
        what = f"{cfg.task.name} (train share {cfg.task.train_share:g}, level {level}: {cfg.cluster.levels[level]} clusters, " \
               f"{cfg.train.max_steps} steps{capped}) [{point.name}]"
        planned = planned_repetition(groups, len(prepared.stores.pool), planned_draws(cfg.train, cfg.corpus.window_length))
        out.append((what, coverage_metrics(entry, planned)))
    return out


def coverage_lines(report: list[tuple[str, dict[str, float]]]) -> list[str]:
    lines = []
    for what, metrics in report:
        lines += [what, "  " + verdict(metrics), "  " + repetition(metrics)]
    return lines


def _stage_keys(tracker, run) -> dict[str, str]:
    """The run's stage name -> cache key: its stages.json artifact (runs logged before it: crisp.cache.* tags)."""
    from crisp_pl.study import STAGES_ARTIFACT

    if tracker.has_artifact(run.info.run_id, STAGES_ARTIFACT):
        return tracker.read_json_artifact(run.info.run_id, STAGES_ARTIFACT)
    return {k.removeprefix("crisp.cache."): v for k, v in run.data.tags.items() if k.startswith("crisp.cache.")}


def _cache_path(cache: Path, keys: dict[str, str], stage: str, name: str | None = None) -> Path:
    key = keys.get(name or stage)
    if key is None:
        raise ConfigError(f"the run records no {name or stage} stage: not a finished CRISP run of crisp_pl")
    path = cache / stage / key
    if not path.is_dir():
        raise ConfigError(f"{path}: the run's {stage} stage is not in the stage cache {cache} (removed or moved? "
                          "--cache-dir names another)")
    return path


def inspect_run(results_dir: str | Path, run_id: str, top: int = 10, examples: int = 2, chars: int = 240,
                cache_dir: str | Path | None = None) -> list[str]:
    """The run's `top` clusters by sampling weight P(c|Ds): weight, importance weight, size, the sources
    of their windows and `examples` of their windows (a seeded draw), as lines to print. The stages are read
    from `cache_dir`, else the cache the run logged (its `cache_dir` param), else `results_dir/cache`."""
    from crisp_pl.config import TrackingConfig
    from crisp_pl.tracking import Tracker

    results_dir = Path(results_dir)
    tracker = Tracker(TrackingConfig(), results_dir)
    try:
        run = tracker.client.get_run(run_id)
    except Exception as error:  # MLflow raises its own error types for an unknown id
        raise LookupError(f"no run {run_id!r} in {tracker.uri} (crisp study status NAME lists the run ids)") from error
    method = run.data.params.get("selection.method")
    if method not in COVERAGE_METHODS:
        raise ConfigError(f"run {run_id} used selection.method={method}: crisp inspect reads CRISP runs ({', '.join(COVERAGE_METHODS)})")
    keys = _stage_keys(tracker, run)
    logged = run.data.params.get("cache_dir", "None")  # params are text: an unset cache_dir logs "None"
    cache = cache_root(results_dir, cache_dir or (None if logged == "None" else logged))
    selection = _cache_path(cache, keys, "selection")
    table = pd.read_csv(selection / "histogram.csv")
    info = json.loads((selection / "groups.json").read_text()).get("info", {})
    levels = json.loads(run.data.params["cluster.levels"])
    level = int(info.get("chosen_level", int(run.data.params["cluster.level"]))) % len(levels)
    labels = np.load(_cache_path(cache, keys, "labels", "pool_labels") / "labels.npy")[:, level]
    tokenizer = load_tokenizer(_cache_path(cache, keys, "tokenizer") / "tokenizer.json")
    pool = WindowStore(_cache_path(cache, keys, "pool") / "pool", tokenizer)
    rng = seeds.rng(0, "inspect.examples")

    chosen = table.sort_values("p_specialist", ascending=False).head(top)
    lines = [f"run {run.info.run_name} ({run_id}): level {level}, {levels[level]} clusters; "
             f"the top {len(chosen)} hold {chosen['p_specialist'].sum():.0%} of the draws", ""]
    for row in chosen.itertuples():
        members = np.flatnonzero(labels == row.cluster)
        sources = Counter(f"{s}/{d}" if d and d != s else s for s, d in zip(pool.sources[members], pool.domains[members]))
        mix = ", ".join(f"{name} {n / len(members):.0%}" for name, n in sources.most_common(3)) if len(members) else "empty"
        lines.append(f"cluster {row.cluster}: {row.p_specialist:.1%} of draws, w(c) = {row.importance_weight:.2f}, "
                     f"{len(members)} windows ({mix})")
        picks = np.sort(rng.choice(members, min(examples, len(members)), replace=False)) if len(members) else []
        for text in pool.texts(picks) if len(picks) else []:
            snippet = " ".join(text.split())[:chars]
            lines.append(textwrap.indent(textwrap.fill(f"“{snippet}…”", 100), "    "))
        lines.append("")
    return lines
