"""A 200-point study in one MLflow store: how long `crisp study status` and `crisp figures` take, and
how much the store holds per run.

The runs are logged through the study runner's own code path (`StudyRunner`'s parent run, then per
point `Tracker.create_run`, Lightning-style step curves, and `StudyRunner._log_result` with a point's
~60 final metrics and its artifacts), with metric values drawn at random: what is measured is the
store, not the models, so no point trains.

    python benchmarks/store_load.py                    # 200 points, into a temporary folder
    python benchmarks/store_load.py --points 500 --keep /tmp/load

One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from mlflow.entities import Metric

from analysis.figures import draw_study
from crisp_pl.config import to_dict
from crisp_pl.stages.point import PointResult
from crisp_pl.study import StudyRunner, load_study, run_name


def study_file(folder: Path, points: int) -> Path:
    seeds = 4
    spec = {"name": "load", "description": "a load test of the MLflow store", "config": {"task": "medical"},
            "grid": {"selection.method": ["uniform", "crisp"], "train.lr": [round(1e-4 * (1 + i), 6) for i in range(points // (2 * seeds))]},
            "seeds": list(range(seeds))}
    path = folder / "load.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def fake_result(rng: np.random.Generator, method: str, folder: Path) -> PointResult:
    metrics = {f"test/medical/{k}": float(rng.uniform(1, 500)) for k in ("ppl", "loss", "unigram_ppl", "tokens")}
    metrics.update({f"train/final_{k}": float(rng.uniform(1, 100)) for k in ("train_seconds", "steps", "tokens", "flops", "params")})
    metrics.update({f"{g}/{k}": float(rng.uniform()) for g in ("data", "selection", "coverage", "cost") for k in "abcdefghijkl"})
    artifacts = {}
    if method == "crisp":
        table = folder / "histogram.csv"
        pd.DataFrame({"cluster": range(64), "generalist_windows": rng.integers(1, 500, 64), "specialist_pieces": rng.integers(0, 20, 64),
                      "p_generalist": rng.dirichlet(np.ones(64)), "p_specialist": rng.dirichlet(np.ones(64)),
                      "importance_weight": rng.uniform(0, 5, 64)}).to_csv(table, index=False)
        artifacts["histogram.csv"] = table
    return PointResult(metrics, {stage: f"{rng.integers(1 << 60):016x}" for stage in ("pool", "task", "tree", "selection", "train", "eval")},
                       artifacts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--curve", type=int, default=20, help="val/loss values per run")
    parser.add_argument("--keep", default=None, help="a folder to keep the store in (default: a temporary one)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="crisp-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    runner = StudyRunner(load_study(str(study_file(folder, args.points))), "tiny", [f"results_dir={folder / 'results'}"])

    started = time.perf_counter()
    parent = runner.parent(create=True).run_id
    for point in runner.points:
        run_id = runner.tracker.create_run(run_name(point), runner.child_tags(parent, point), to_dict(point.config)).run_id
        runner.tracker.client.log_batch(run_id, metrics=[Metric("val/loss", float(v), 0, step) for step, v in enumerate(rng.uniform(3, 8, args.curve))])
        runner._log_result(run_id, point, fake_result(rng, point.config.selection.method, folder))
    runner.tracker.end_run(parent, "FINISHED")
    logged = time.perf_counter() - started
    size = (folder / "results" / "mlflow.db").stat().st_size + sum(p.stat().st_size for p in (folder / "results" / "mlartifacts").rglob("*")
                                                                    if p.is_file())
    print(json.dumps({"measure": "log", "points": len(runner.points), "seconds": round(logged, 2),
                      "store_bytes_per_run": round(size / len(runner.points))}))

    for name in ("status", "results"):  # each from a fresh runner, as a new `crisp` command would
        fresh = StudyRunner(runner.study, "tiny", [f"results_dir={folder / 'results'}"])
        started = time.perf_counter()
        out = getattr(fresh, name)()
        print(json.dumps({"measure": name, "points": len(runner.points), "seconds": round(time.perf_counter() - started, 2)}))
    started = time.perf_counter()
    draw_study(out)
    print(json.dumps({"measure": "figures (drawing only)", "points": len(runner.points), "seconds": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
