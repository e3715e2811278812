"""End to end: a micro study on real builtin text through every real stage, tracked in a real MLflow store."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from crisp_pl.study import StudyRunner, load_study

MICRO_STUDY = {
    "name": "micro",
    "description": "the quickstart shape at test size",
    "config": {
        "corpus": {
            "window_length": 64,
            "max_chars_per_doc": 1500,
            "sources": [
                {"name": "medical", "max_docs": 150},
                {"name": "wiki", "max_docs": 60},
                {"name": "python_stdlib", "max_docs": 8},
            ],
        },
        "task": {"name": "medical", "sources": ["medical"], "train_fraction": 0.2, "validation_fraction": 0.1, "test_fraction": 0.2},
        "embed": {"max_seq_length": 48, "batch_size": 32},
        "cluster": {"levels": [4, 16], "niter": 8},
        "model": {"size": "micro"},
        "train": {"max_steps": 12, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 4, "val_every": 6, "log_every": 2},
        "eval": {"batch_size": 16, "max_windows": 32},
    },
    "grid": {"selection.method": ["uniform", "crisp", "specialist"]},
}


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_STUDY))
    return path


def cache_snapshot(results: Path) -> dict[str, float]:
    return {str(p.relative_to(results / "cache")): p.stat().st_mtime for p in (results / "cache").glob("*/*")}


@pytest.mark.slow
def test_micro_study_runs_logs_draws_and_reruns_for_free(study_file, tmp_path):
    results = tmp_path / "results"
    runner = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"])
    rows = runner.run()
    assert [r["point"] for r in rows] == [f"selection.method={m}" for m in ("uniform", "crisp", "specialist")]
    for row in rows:
        assert math.isfinite(row["test/medical/ppl"]) and 1 < row["test/medical/ppl"] < 60000
        assert row["train/final_steps"] == 12 and row["data/samples"] == 48
        assert row["train/final_tokens"] == 12 * 4 * 63  # steps x batch x predicted tokens per 64-token window
    crisp = runner.client.get_run(rows[1]["run_id"])
    assert crisp.data.params["selection.method"] == "crisp" and crisp.data.tags["mlflow.parentRunId"]
    assert "crisp.cache.tree" in crisp.data.tags and "provenance.git_revision" in crisp.data.tags
    assert len(runner.client.get_metric_history(crisp.info.run_id, "train/loss")) >= 3
    assert 0 <= crisp.data.metrics["selection/dropped_mass"] <= 1
    assert rows[2]["data/available_windows"] < rows[0]["data/available_windows"]  # specialist-only draws from far fewer windows
    assert [r["state"] for r in runner.status()] == ["done"] * 3

    from analysis.figures import draw_study

    paths = draw_study(runner.results())
    assert {p.name for p in paths} >= {"results.png", "val_loss.png", "results.md", "histogram-selection.method-crisp.png"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert "selection.method=crisp" in (paths[2]).read_text()

    before = cache_snapshot(results)
    again = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"]).run()
    assert all(r["skipped"] for r in again)
    assert cache_snapshot(results) == before  # nothing recomputed, nothing rewritten


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_stages(study_file, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-m", "crisp_pl.cli", "study", "run", str(study_file), "--set", f"results_dir={results}"]
    log = open(tmp_path / "run.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if any(p.is_dir() and not p.name.endswith(".partial") for p in (results / "cache" / "train").glob("*")):
            os.killpg(process.pid, signal.SIGKILL)  # the first point has trained; kill it mid-study
            break
        time.sleep(0.2)
    process.wait()
    finished = cache_snapshot(results)
    assert any(k.startswith("train/") for k in finished)

    runner = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"])
    rows = runner.run()
    assert [r["state"] for r in runner.status()] == ["done"] * 3
    after = cache_snapshot(results)
    assert all(after[k] == v for k, v in finished.items() if not k.endswith(".partial"))  # finished stages untouched
    assert len(rows) == 3
