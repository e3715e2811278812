"""Killed at any moment, resumed with nothing lost or redone: a micro study is SIGKILLed inside each
stage in turn (window writing, embedding, k-means, labelling, selection, training mid-run, fine-tuning
mid-run, evaluation, the coverage diagnostic, and MLflow logging), rerun after each kill, and must end
exactly where an uninterrupted run ends: the same final metrics bit for bit, no finished stage
rebuilt, one finished MLflow run per point. Since the reference is an uninterrupted fresh run, this is
also the determinism test: the two runs' stages hold the same bytes and their loss curves match step by step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crisp_pl.study import StudyRunner, load_study
from tests.test_study import SEEDED_STUDY, write_study

# Runs the `crisp` command with one stage rigged to die: the process SIGKILLs itself inside the named
# stage's build (once a file matching the glob appears in its partial folder, or when the build ends,
# before the finished folder is renamed into place), or right after a point's metrics reach MLflow.
KILLER = r"""
import os, signal, sys, threading, time
stage_name, pattern = sys.argv[1].partition(":")[::2]
from crisp_pl import cache, tracking

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if stage_name == "mlflow":
    log_point = tracking.Tracker.log_point
    def log_then_die(self, *args, **kwargs):
        log_point(self, *args, **kwargs)
        die()  # metrics and artifacts logged, the run not yet marked FINISHED
    tracking.Tracker.log_point = log_then_die
else:
    run = cache.StageCache.run
    def rigged(self, stage, inputs, build, **kwargs):
        if stage != stage_name:
            return run(self, stage, inputs, build, **kwargs)
        def build_then_die(out):
            if pattern:
                def watch():
                    while not list(out.glob(pattern)):
                        time.sleep(0.002)
                    die()
                threading.Thread(target=watch, daemon=True).start()
            build(out)
            die()
        return run(self, stage, inputs, build_then_die, **kwargs)
    cache.StageCache.run = rigged
from crisp_pl.cli import main
sys.exit(main(sys.argv[2:]))
"""

# In the order a first run reaches them: the generalist point, then CRISP's data path, then CRISP+FT.
KILLS = ["pool", "selection", "train:checkpoints/*.ckpt", "eval", "mlflow", "embeddings:emb-*.npy", "tree", "labels",
         "coverage", "finetune:checkpoints/*.ckpt"]


def finished_stages(results: Path) -> dict[str, float]:
    """Finished stage folder -> mtime of its stage.json (rewritten only if the stage were rebuilt)."""
    return {str(p.parent.relative_to(results / "cache")): p.stat().st_mtime for p in (results / "cache").glob("*/*/stage.json")}


def final_metrics(runner: StudyRunner) -> dict[str, dict[str, float]]:
    runs = runner.results().runs.set_index("point")
    keep = [c for c in runs.columns if c.startswith(("test/", "train/final_", "finetune/", "data/", "selection/", "coverage/"))
            and not c.endswith(("seconds", "hours"))]  # wall time is the one thing a kill may change
    return {point: {k: v for k, v in row.items()} for point, row in runs[keep].iterrows()}


@pytest.mark.slow
def test_a_study_killed_inside_every_stage_ends_as_an_uninterrupted_run(tmp_path):
    spec = dict(SEEDED_STUDY, name="killed", seeds=[0])
    study_file = Path(write_study(tmp_path, spec))

    reference = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={tmp_path / 'reference'}"])
    reference.run()

    results = tmp_path / "results"
    command = ["study", "run", str(study_file), "--set", f"results_dir={results}"]
    seen: dict[str, float] = {}
    for kill in KILLS:
        done = subprocess.run([sys.executable, "-c", KILLER, kill, *command], capture_output=True, text=True, timeout=600)
        assert done.returncode == -9, f"never reached {kill}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        now = finished_stages(results)
        assert {k: now[k] for k in seen} == seen, f"a finished stage was rebuilt by the run killed in {kill}"
        seen = now
    states = [r["state"] for r in StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"]).status()]
    assert "killed" in states and "running" not in states, states  # MLflow still says RUNNING; no process holds the study
    assert subprocess.run([sys.executable, "-m", "crisp_pl.cli", *command], capture_output=True, timeout=600).returncode == 0

    assert {k: v for k, v in finished_stages(results).items() if k in seen} == seen  # the last run rebuilt nothing either
    runner = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"])
    assert [r["state"] for r in runner.status()] == ["done"] * 3
    children = runner.client.search_runs([runner.tracker.experiment], "tags.`crisp.kind` = 'point'")
    assert sorted(r.data.tags["crisp.point"] for r in children) == sorted(p.name for p in runner.points)  # one run per point
    measured, expected = final_metrics(runner), final_metrics(reference)
    assert measured.keys() == expected.keys()
    for point in expected:
        assert json.dumps(measured[point], sort_keys=True) == json.dumps(expected[point], sort_keys=True), point
    assert_same_outputs(tmp_path / "reference", results)
    for point in expected:  # the loss curves agree at every step both logged
        killed, fresh = ({m.step: m.value for m in r.client.get_metric_history(r.child(r.parent(create=False).run_id, p).run_id,
                                                                               "train/loss")}
                         for r in (runner, reference) for p in r.points if p.name == point)
        assert {step: fresh[step] for step in killed} == killed, point
        # a kill as a checkpoint is written loses the log of that step (Lightning logs it after the checkpoint)
        assert len(fresh) - len(killed) <= (1 if point.startswith("generalist") else 0), point


def assert_same_outputs(reference: Path, results: Path) -> None:
    """Determinism: every finished stage of the two runs holds the same bytes (windows, embeddings, tree,
    labels, groups, metrics); checkpoints, which also record their own folder, the same tensors."""
    import torch

    folders = sorted(p.parent.relative_to(reference / "cache") for p in (reference / "cache").glob("*/*/stage.json"))
    assert folders == sorted(p.parent.relative_to(results / "cache") for p in (results / "cache").glob("*/*/stage.json"))
    for folder in folders:
        for path in sorted((reference / "cache" / folder).rglob("*")):
            twin = results / "cache" / folder / path.relative_to(reference / "cache" / folder)
            if path.is_dir() or path.name in ("stage.json", "manifest.json") or "checkpoints" in path.parts:
                continue  # wall time; sizes of the files compared here; the mid-run checkpoints a kill cut differently
            if path.suffix == ".ckpt":
                a, b = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (path, twin))
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{folder}/{path.name}"
            elif path.name == "train.json":  # a TrainRecord: everything but its wall time
                a, b = (json.loads(p.read_text()) for p in (path, twin))
                assert a.pop("train_seconds") > 0 and b.pop("train_seconds") > 0 and a == b, f"{folder}/train.json"
            elif path.name == "tree_fit.json":  # everything but the seconds each level took
                a, b = (json.loads(p.read_text()) for p in (path, twin))
                assert len(a.pop("level_seconds")) == len(b.pop("level_seconds")) == len(a["levels"]) and a == b, f"{folder}/tree_fit.json"
            else:
                assert path.read_bytes() == twin.read_bytes(), f"{folder}/{path.relative_to(reference / 'cache' / folder)}"


@pytest.mark.slow
def test_a_full_disk_stops_with_a_clear_message_and_the_rerun_resumes(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the first file over 2 MB (a model checkpoint) cannot be written."""
    import resource

    spec = dict(SEEDED_STUDY, name="full_disk", seeds=[0], variants={"generalist": {"selection.method": "uniform"}})
    study_file = Path(write_study(tmp_path, spec))
    results = tmp_path / "results"
    command = [sys.executable, "-m", "crisp_pl.cli", "study", "run", str(study_file), "--set", f"results_dir={results}"]

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    full = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    assert full.returncode == 3, full.stderr[-3000:]
    assert "out of disk space or over a file-size limit (File too large" in full.stderr and "Traceback" not in full.stderr
    before = finished_stages(results)
    assert "pool" in {k.split("/")[0] for k in before} and not any(k.startswith("train/") for k in before)  # data done, training not
    assert list((results / "cache").glob("train/*.partial"))  # its progress waits in the partial folder

    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0  # space freed: the same command resumes
    assert {k: v for k, v in finished_stages(results).items() if k in before} == before
    runner = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"])
    assert [r["state"] for r in runner.status()] == ["done"]


@pytest.mark.slow
def test_concurrent_runs_on_one_results_folder_share_stages_and_corrupt_nothing(tmp_path):
    """Two runs of one study and a third study sharing its data stages, all at once on one results folder."""
    first = dict(SEEDED_STUDY, name="first", seeds=[0], variants={"crisp": {"selection.method": "crisp"}})
    second = dict(first, name="second", variants={"crisp": {"selection.method": "crisp"},
                                                  "generalist": {"selection.method": "uniform"}})
    files = [write_study(tmp_path, spec) for spec in (first, first, second)]
    results = tmp_path / "results"
    procs = [subprocess.Popen([sys.executable, "-m", "crisp_pl.cli", "study", "run", str(f), "--set", f"results_dir={results}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for f in files]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n\n".join(log[-2000:] for log in logs)
    assert any("waiting for it" in log for log in logs)  # one waited on a stage or on the study another was running

    stages = {}
    for path in (results / "cache").glob("*/*/stage.json"):
        stages.setdefault(path.parent.parent.name, []).append(path.parent.name)
    assert stages["embeddings"] and not list((results / "cache").glob("*/*.partial"))
    for name, spec in (("first", first), ("second", second)):
        runner = StudyRunner(load_study(str(tmp_path / f"{name}.yaml")), "tiny", [f"results_dir={results}"])
        assert [r["state"] for r in runner.status()] == ["done"] * len(spec["variants"])
        children = runner.client.search_runs([runner.tracker.experiment], f"tags.`crisp.study` = '{name}' and tags.`crisp.kind` = 'point'")
        assert len(children) == len(spec["variants"])  # no point run twice by the two runs of `first`
    # the CRISP point of both studies is one configuration: trained once, read by the other
    assert len(stages["train"]) == 2  # first's crisp (= second's crisp) and second's generalist
