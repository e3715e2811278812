"""The MLflow UI over a results store, driven from Python: its address, a server to start and stop, its REST API.

`crisp ui` execs the server for a person; `serve` starts one for a program (the screenshot script,
the tests), and `rest` / `study_runs` read what a browser would see through MLflow's REST API.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crisp_pl.config import TrackingConfig

# MLflow 3 opens every experiment on its GenAI pages (traces, latency) whatever the experiment's
# `mlflow.experimentKind` tag says; this URL switch shows runs and metrics instead
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def runs_url(store: Path, host: str, port: int) -> str:
    """The page of the studies' runs table in the UI serving `store` (a results folder's mlflow.db)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as connection:
        found = connection.execute("SELECT experiment_id FROM experiments WHERE name = ?", (TrackingConfig().experiment,)).fetchone()
    page = f"#/experiments/{found[0]}" if found else "#/experiments"
    return f"http://{host}:{port}/{page}?{MODEL_TRAINING_VIEW}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(results_dir: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[str]:
    """`crisp ui` on a free loopback port, in its own process group; yields its base URL once it answers."""
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "crisp_pl.cli", "ui", "--results-dir", str(results_dir), "--port", str(port)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if ui.poll() is not None:
                raise RuntimeError(f"crisp ui exited with {ui.returncode}; run `crisp ui --results-dir {results_dir}` to see why")
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"crisp ui did not answer on port {port} within {timeout:.0f} s") from None
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def rest(base: str, path: str, body: dict | None = None) -> dict:
    """One call to MLflow's REST API (`path` after /api/2.0/mlflow/): GET with its query, or POST `body` as JSON."""
    url = f"{base}/api/2.0/mlflow/{path}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}) if body else url
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def study_runs(base: str, study: str | None = None) -> tuple[str, dict, list[dict]]:
    """The experiment id, the study's latest parent run (the latest of any study without a name) and its point runs."""
    for experiment in rest(base, "experiments/search", {"max_results": 1000}).get("experiments", []):
        query = "tags.`crisp.kind` = 'study'" + (f" and tags.`crisp.study` = '{study}'" if study else "")
        parents = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "filter": query,
                                             "order_by": ["attributes.start_time DESC"], "max_results": 1}).get("runs", [])
        if parents:
            parent_id = parents[0]["info"]["run_id"]
            children = rest(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000,
                                                  "filter": f"tags.`mlflow.parentRunId` = '{parent_id}'"}).get("runs", [])
            return experiment["experiment_id"], parents[0], children
    raise LookupError(f"no study{' ' + study if study else ''} in this store; run it first (crisp study run ...)")
