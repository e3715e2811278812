"""MLflow, writing and reading back: the only module of crisp_pl that talks to the store.

The store is sqlite under the results folder unless `tracking.uri` says otherwise. A study is a
parent run; each grid point is a child run tagged with the study, its point and its config hash,
so a rerun finds finished points and skips them, and a point that died mid-way is resumed in
the same MLflow run. `Tracker` writes those runs and reads them back as pandas DataFrames, so
nothing else needs MLflow's objects (Lightning's MLFlowLogger, made in study.py, writes the
step metrics of a point straight into the child run).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from crisp_pl.cache import exclusive
from crisp_pl.config import TrackingConfig

# reading a CSV artifact back is instant: MLflow's download bar, one per artifact, only filled `crisp figures`' output
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

if TYPE_CHECKING:
    import pandas as pd

PACKAGES = ("crisp_pl", "torch", "lightning", "sentence-transformers", "faiss-cpu", "mlflow", "numpy", "tiktoken")
PARAMS_PER_BATCH = 100  # MLflow's limit on params (and tags) in one log_batch call
SEARCH_MAX = 50000  # MLflow's largest page of search_runs (its default is 1000: a seeded study may have more points)
RUN_COLUMNS = ["point", "group", "seed", "method", "task", "variant", "finetune", "run_id"]


@dataclass(frozen=True)
class TrackedRun:
    """A run as the study runner needs it: its id and MLflow status (RUNNING, FINISHED, FAILED, KILLED)."""

    run_id: str
    status: str
    metrics: dict = field(default_factory=dict)
    """Its final metrics (as search returned them)."""


class Tracker:
    """One experiment of one MLflow store: finds and creates runs, logs points, reads results back."""

    def __init__(self, tracking: TrackingConfig, results_dir: str | Path):
        from mlflow.tracking import MlflowClient  # heavy; only commands that track pay for it

        self.uri = tracking_uri(tracking, results_dir)
        # a new store's schema (made as the client opens it) and the experiment are created once: two processes
        # starting on a fresh results folder raced on both ("table ... already exists")
        with exclusive(Path(results_dir) / "locks" / "mlflow.lock", "the MLflow store"):
            if not tracking.uri:
                relocate(Path(results_dir))
            self.client = MlflowClient(self.uri)
            self.experiment = experiment_id(self.client, tracking.experiment, results_dir)

    # writing

    def find_run(self, tags: dict[str, str]) -> TrackedRun | None:
        """The newest run carrying all `tags`, or None."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
        return TrackedRun(runs[0].info.run_id, runs[0].info.status, dict(runs[0].data.metrics)) if runs else None

    def create_run(self, name: str, tags: dict[str, str], params: dict) -> TrackedRun:
        """A new run with `tags` and `params` (nested mappings flattened to dotted keys)."""
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment, run_name=name, tags=tags)
        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        for start in range(0, len(flat), PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=flat[start:start + PARAMS_PER_BATCH])
        return TrackedRun(run.info.run_id, run.info.status)

    def mark_running(self, run_id: str) -> None:
        """A run resumed: RUNNING again, its end time left as it was."""
        self.client.update_run(run_id, "RUNNING")

    def end_run(self, run_id: str, status: str) -> None:
        """Terminal status (FINISHED or FAILED) and end time."""
        self.client.set_terminated(run_id, status)

    def log_point(self, run_id: str, metrics: dict[str, float], tags: dict[str, str], documents: dict[str, str],
                  artifacts: Iterable[str | Path]) -> None:
        """A finished point's final metrics (step 0), tags, text documents (name -> text: config.yaml, ...) and artifact files."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        for name, text in documents.items():
            self.client.log_text(run_id, text, name)
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))

    def backfill_curve(self, run_id: str, key: str, points: list[list[float]]) -> None:
        """Log (step, value) `points` as `key`'s history unless the run has one: a model reused from the cache
        trained without this run watching."""
        from mlflow.entities import Metric

        if points and not self.client.get_metric_history(run_id, key):
            now = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(key, float(value), now, int(step)) for step, value in points])

    def log_summary(self, run_id: str, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])

    # reading back

    def finished_children(self, parent_id: str) -> pd.DataFrame:
        """One row per FINISHED child run of `parent_id`: point, group, seed, method, task, variant, finetune,
        run_id, every final metric.

        `group` is the point's name without its seed (tag `crisp.group`), `seed` the study seed (tag
        `crisp.seed`), `finetune` whether the point fine-tuned (param `finetune.enabled`). Runs logged
        before those tags existed read as their own group, seeded by their `train.seed` param."""
        import pandas as pd

        query = f"tags.`crisp.parent` = '{parent_id}' and attributes.status = 'FINISHED'"
        rows = [{"point": r.data.tags.get("crisp.point"), "group": r.data.tags.get("crisp.group", r.data.tags.get("crisp.point")),
                 "seed": _int_or_none(r.data.tags.get("crisp.seed", r.data.params.get("train.seed"))),
                 "method": r.data.tags.get("crisp.method"), "task": r.data.tags.get("crisp.task"),
                 "variant": r.data.tags.get("crisp.variant", r.data.tags.get("crisp.method")),
                 "finetune": r.data.params.get("finetune.enabled") == "True", "run_id": r.info.run_id, **r.data.metrics}
                for r in self.client.search_runs([self.experiment], query, max_results=SEARCH_MAX)]
        return pd.DataFrame(rows, columns=None if rows else RUN_COLUMNS)

    def metric_history(self, run_ids: Iterable[str], key: str) -> pd.DataFrame:
        """Every logged value of metric `key` of each run, long form: run_id, step, value (in logging order)."""
        import pandas as pd

        rows = [{"run_id": run_id, "step": m.step, "value": m.value}
                for run_id in run_ids for m in self.client.get_metric_history(run_id, key)]
        return pd.DataFrame(rows, columns=["run_id", "step", "value"])

    def has_artifact(self, run_id: str, path: str) -> bool:
        return any(f.path == path for f in self.client.list_artifacts(run_id))

    def read_json_artifact(self, run_id: str, path: str):
        with tempfile.TemporaryDirectory() as folder:
            return json.loads(Path(self.client.download_artifacts(run_id, path, folder)).read_text())

    def read_csv_artifact(self, run_id: str, path: str) -> pd.DataFrame:
        """A run's CSV artifact as a DataFrame (downloaded to a temporary folder, then removed)."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as folder:
            return pd.read_csv(self.client.download_artifacts(run_id, path, folder))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested mappings -> dotted keys; values as text cut to 500 characters (MLflow's param limit)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = str(value)[:500]
    return out


def tracking_uri(tracking: TrackingConfig, results_dir: str | Path) -> str:
    if tracking.uri:
        return tracking.uri
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def relocate(results_dir: Path) -> None:
    """A results folder copied or moved since its runs were logged: point the store's artifact paths (and
    the checkpoint tags) at this folder. MLflow records them as absolute URIs, so a moved store would
    otherwise read, or fail to read, the artifacts of the folder it came from."""
    import sqlite3

    db = results_dir / "mlflow.db"
    if not db.is_file():
        return
    here = results_dir.resolve()
    with sqlite3.connect(db) as connection:
        try:
            rows = connection.execute("SELECT artifact_location FROM experiments WHERE artifact_location LIKE 'file://%/mlartifacts'").fetchall()
        except sqlite3.OperationalError:
            return  # not yet a store (its schema is made by MLflow)
        roots = {Path(location.removeprefix("file://")).parent for (location,) in rows} - {here}
        for root in roots:
            old, new = root.as_uri(), here.as_uri()
            connection.execute("UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                               "WHERE artifact_location LIKE ? || '/%'", (new, len(old) + 1, old))
            connection.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE artifact_uri LIKE ? || '/%'",
                               (new, len(old) + 1, old))
            connection.execute("UPDATE tags SET value = ? || substr(value, ?) WHERE key = 'crisp.checkpoint' AND value LIKE ? || '/%'",
                               (str(here), len(str(root)) + 1, str(root)))
            print(f"mlflow: this results folder was at {root}; its artifact paths now point here", file=sys.stderr, flush=True)


def experiment_id(client, name: str, results_dir: str | Path) -> str:
    """Get or create the experiment, keeping its artifacts under the results folder (not the cwd)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        artifacts = (Path(results_dir).resolve() / "mlartifacts").as_uri()
        found = client.get_experiment(client.create_experiment(name, artifact_location=artifacts))
    if found.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
        # without it the UI opens on its GenAI overview (traces, latency), one toggle away from the runs
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return found.experiment_id


EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def provenance() -> dict[str, str]:
    """Code revision, package versions and hardware, logged with every run."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": str(os.cpu_count())}
    try:
        root = Path(__file__).resolve().parent.parent
        info["git_revision"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5).stdout
        info["git_dirty"] = str(bool(dirty.strip()))
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = "unknown"
    for package in PACKAGES:
        try:
            info[f"version/{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    import torch

    info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    info["gpus"] = str(torch.cuda.device_count())
    return info
