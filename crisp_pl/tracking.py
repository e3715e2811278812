"""MLflow plumbing: where the store lives, parent/child runs, and each run's provenance.

The store is sqlite under the results folder unless `tracking.uri` says otherwise. A study is a
parent run; each grid point is a child run tagged with the study, its point and its config hash,
so a rerun finds finished points and skips them, and a point that died mid-way is resumed in
the same MLflow run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from crisp_pl.config import TrackingConfig

PACKAGES = ("crisp_pl", "torch", "lightning", "sentence-transformers", "faiss-cpu", "mlflow", "numpy", "tiktoken")


def tracking_uri(tracking: TrackingConfig, results_dir: str | Path) -> str:
    if tracking.uri:
        return tracking.uri
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def experiment_id(client, name: str, results_dir: str | Path) -> str:
    """Get or create the experiment, keeping its artifacts under the results folder (not the cwd)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = (Path(results_dir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def find_run(client, experiment: str, tags: dict[str, str]):
    """The newest run carrying all `tags`, or None."""
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


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
