"""The cpu scale's regime, read from a cache where the quickstart ran at that scale, saved for the tests.

    python -m scripts.cpu_regime        # writes tests/data/cpu_regime.json

What it records: the window count of every full pool the cpu studies read that the cache has built
(by the pool stage's key), and the quickstart CRISP point's selection at 64 clusters (its tree's key,
each cluster's pool windows and sampling weight). tests/test_regime.py recomputes every point's
planned repetition from these and the configs alone, so the regime is checked in every test run
without embedding 72k windows; a changed pool or tree changes its key and the test says to rerun this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crisp_pl.cache import StageCache, is_finished
from crisp_pl.corpus.windows import WindowStore
from crisp_pl.plan import pool_stages
from crisp_pl.sampling import Groups
from crisp_pl.study import load_study, points

MANIFEST = Path(__file__).resolve().parent.parent / "tests" / "data" / "cpu_regime.json"
PROGRAMME = ("quickstart", "baselines", "central_claim", "clusters", "generalist_size", "model_size", "budget",
             "embedding", "granularity")
"""The studies issue 22 runs at the cpu scale."""


def pool_windows(cache_root: str) -> dict[str, int]:
    """Pool stage key -> windows, for every full pool of the programme's studies the cache has built."""
    found = {}
    for name in PROGRAMME:
        for point in points(load_study(name), "cpu"):
            pool = dict(pool_stages(point.config, cache_root))["pool"]
            if point.config.corpus.pool_fraction == 1 and is_finished(pool.path):
                found[pool.key] = len(WindowStore(pool.path / "pool"))
    return found


def crisp_selection(cache_root: str) -> dict:
    """The quickstart CRISP point's tree key and clusters (64), and their sizes and weights."""
    from crisp_pl.stages.data import prepare
    from crisp_pl.stages.selection import selection_stage

    cfg = next(p.config for p in points(load_study("quickstart"), "cpu") if p.config.selection.method == "crisp")
    cache = StageCache(cache_root)
    prepared = prepare(cache, cfg, need_embeddings=True, need_clusters=True)  # cached: read, not built
    groups = Groups.load(selection_stage(cache, cfg, prepared).path)
    return {"tree": prepared.tree.key, "clusters": cfg.cluster.levels[cfg.cluster.level],
            "sizes": groups.sizes.tolist(), "weights": [round(float(w), 12) for w in groups.weights]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="results/cache")
    parser.add_argument("--out", default=str(MANIFEST))
    args = parser.parse_args()
    regime = {"pools": pool_windows(args.cache), "quickstart_crisp": crisp_selection(args.cache)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(regime, indent=1) + "\n")
    print(f"{args.out}: {len(regime['pools'])} pools, CRISP at {regime['quickstart_crisp']['clusters']} clusters")


if __name__ == "__main__":
    main()
