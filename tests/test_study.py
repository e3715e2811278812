"""End to end: a micro study on real builtin text through every real stage, tracked in a real MLflow store."""

import json
import math
import os
import sys
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
def test_micro_study_runs_logs_draws_and_reruns_for_free(study_file, tmp_path, capsys):
    results = tmp_path / "results"
    runner = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"])
    rows = runner.run()
    assert [r["point"] for r in rows] == [f"selection.method={m}" for m in ("uniform", "crisp", "specialist")]
    for row in rows:
        assert math.isfinite(row["test/medical/ppl"]) and 1 < row["test/medical/ppl"] < 60000
        assert row["train/final_steps"] == 12 and row["data/samples"] == 48
        assert row["train/final_tokens"] == 12 * 4 * 63  # steps x batch x predicted tokens per 64-token window
        assert row["data/train_documents_cut"] >= 0 and row["data/test_documents_cut"] >= 0  # the cap's toll, logged
    crisp = runner.client.get_run(rows[1]["run_id"])
    assert crisp.data.params["selection.method"] == "crisp" and crisp.data.tags["mlflow.parentRunId"]
    logged = {a.path for a in runner.client.list_artifacts(crisp.info.run_id)}
    assert {"stages.json", "provenance.json", "config.yaml", "histogram.csv", "coverage.csv", "tree_fit.json"} <= logged
    tree_fit = json.loads(Path(runner.client.download_artifacts(crisp.info.run_id, "tree_fit.json", str(tmp_path))).read_text())
    assert tree_fit["backend"] in ("faiss", "torch") and tree_fit["levels"] == [4, 16] and len(tree_fit["level_seconds"]) == 2
    assert not [t for t in crisp.data.tags if t.startswith(("crisp.cache.", "provenance."))]  # keys and provenance: artifacts
    assert len([t for t in crisp.data.tags if not t.startswith("mlflow.")]) <= 12  # the few tags a user filters by
    assert crisp.info.run_name == "crisp" and crisp.data.tags["crisp.point"] == "selection.method=crisp"  # names the table keeps
    assert len(runner.client.get_metric_history(crisp.info.run_id, "train/loss")) >= 3
    assert "epoch" not in crisp.data.metrics and "train/lr" not in crisp.data.params  # no Lightning bookkeeping as results
    assert 0 <= crisp.data.metrics["selection/dropped_mass"] <= 1
    assert 0 < crisp.data.metrics["coverage/nearest_ratio"] and 1 <= crisp.data.metrics["coverage/effective_clusters"]
    assert crisp.data.metrics["coverage/expected_repetition"] >= crisp.data.metrics["coverage/uniform_repetition"] >= 1
    assert "coverage/nearest_ratio" not in runner.client.get_run(rows[0]["run_id"]).data.metrics  # CRISP's diagnostic only
    assert rows[2]["data/available_windows"] < rows[0]["data/available_windows"]  # specialist-only draws from far fewer windows
    assert [r["state"] for r in runner.status()] == ["done"] * 3

    from analysis.figures import draw_study

    results_read = runner.results()
    assert set(results_read.coverage["selection.method=crisp"]["set"]) == {"specialist", "pool"}
    paths = draw_study(results_read)
    assert {p.name for p in paths} >= {"results.png", "val_loss.png", "results.md", "histogram-selection.method-crisp.png"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert "selection.method=crisp" in (results_read.folder / "results.md").read_text()
    assert {p.name for p in paths} >= {"results.pdf", "val_loss.pdf", "histogram-selection.method-crisp.pdf"}  # vector copies
    runner.attach_figures(runner.results().folder)
    parent = runner.parent(create=False).run_id
    assert runner.client.get_run(parent).data.tags["mlflow.note.content"] == load_study(str(study_file)).description.strip()
    runner.attach_figures(runner.results().folder, runner.results().runs)
    summary = runner.client.get_run(parent)
    assert summary.data.params["grid.selection.method"] == "['uniform', 'crisp', 'specialist']"
    assert summary.data.metrics["medical/selection.method crisp/ppl"] == pytest.approx(rows[1]["test/medical/ppl"])
    experiment = runner.client.get_experiment(runner.tracker.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs, not GenAI traces
    logged = {a.path for a in runner.client.list_artifacts(parent)} | {a.path for a in runner.client.list_artifacts(parent, "figures")}
    assert {study_file.name, "figures/results.png", "figures/results.md"} <= logged  # the study file and its figures

    from crisp_pl.cli import main

    assert main(["inspect", rows[1]["run_id"], "--results-dir", str(results), "--top", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("\ncluster ") == 2 and "of draws, w(c) = " in shown and "“" in shown  # two clusters, with examples
    assert main(["inspect", rows[0]["run_id"], "--results-dir", str(results)]) == 2  # uniform: nothing to inspect
    assert "crisp inspect reads CRISP runs" in capsys.readouterr().err

    before = cache_snapshot(results)
    assert main(["coverage", str(study_file), "--set", f"results_dir={results}"]) == 0
    report = capsys.readouterr().out
    assert report.count("\n  the pool ") == 1 and "medical (train share 1" in report  # one specialist set: one verdict
    assert cache_snapshot(results) == before  # the study's own stages: nothing recomputed

    # what a browser sees, through the UI's REST API; the venv's bin is not on PATH (a user who did not activate it)
    from crisp_pl.ui import rest, serve, study_runs

    env = dict(os.environ, PATH=":".join(p for p in os.environ["PATH"].split(":") if p != os.path.dirname(sys.executable)))
    with serve(results, env=env) as base:
        experiment, parent_run, children = study_runs(base, "micro")
        assert parent_run["info"]["run_name"] == "micro [tiny]" and parent_run["info"]["run_id"] == parent
        assert sorted(r["info"]["run_name"] for r in children) == ["crisp", "specialist", "uniform"]
        tags = {t["key"] for t in children[0]["data"]["tags"] if not t["key"].startswith("mlflow.")}
        assert tags == {"crisp.kind", "crisp.study", "crisp.scale", "crisp.parent", "crisp.point", "crisp.method", "crisp.task",
                        "crisp.variant", "crisp.seed", "crisp.group", "crisp.config_hash", "crisp.checkpoint"}
        listed = {f["path"] for f in rest(base, f"artifacts/list?run_id={parent}")["files"]}
        listed |= {f["path"] for f in rest(base, f"artifacts/list?run_id={parent}&path=figures")["files"]}
        assert {"micro.yaml", "provenance.json", "figures/results.png", "figures/results.pdf", "figures/results.md"} <= listed
        summary_metrics = {m["key"] for m in parent_run["data"]["metrics"]}
        assert "medical/selection.method crisp/ppl" in summary_metrics and "epoch" not in summary_metrics

    again = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}"]).run()
    assert all(r["skipped"] for r in again)
    assert cache_snapshot(results) == before  # nothing recomputed, nothing rewritten

    # another store over the same cache: every model is reused, and its runs still carry the validation curves
    elsewhere = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={results}", f"tracking.uri=sqlite:///{tmp_path / 'b.db'}"])
    reused = elsewhere.run()
    assert cache_snapshot(results) == before
    curve = [(m.step, m.value) for m in elsewhere.client.get_metric_history(reused[1]["run_id"], "val/loss")]
    assert curve == [(m.step, m.value) for m in runner.client.get_metric_history(rows[1]["run_id"], "val/loss")] and len(curve) == 2


SEEDED_STUDY = {
    **MICRO_STUDY,
    "name": "micro_seeds",
    "description": "the micro study over two seeds: generalist, CRISP, CRISP then fine-tuned",
    "config": {**MICRO_STUDY["config"],
               "train": {**MICRO_STUDY["config"]["train"], "max_steps": 8, "val_every": 4},
               "finetune": {"max_steps": 4, "lr": 1e-3, "warmup_steps": 0, "val_every": 2, "patience": 1}},
    "grid": {},
    "variants": {"generalist": {"selection.method": "uniform"}, "crisp": {"selection.method": "crisp"},
                 "crisp+ft": {"selection.method": "crisp", "finetune.enabled": True}},
    "seeds": [0, 1],
}


def write_study(tmp_path, spec) -> str:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))  # variants run in the order written
    return str(path)


def test_seeds_cross_the_grid_and_set_only_the_training_and_selection_seeds(tmp_path):
    from crisp_pl.config import stable_hash, to_dict
    from crisp_pl.study import points

    spec = dict(MICRO_STUDY, variants={"crisp": {"selection.method": "crisp"}}, grid={"task.train_fraction": [0.2, 0.3]})
    plain = load_study(write_study(tmp_path, spec))
    seeded = load_study(write_study(tmp_path, dict(spec, name="seeded", seeds=[0, 1, 2])))
    pts = points(seeded, "tiny", with_seeds=True)
    assert [p.name for p in pts] == [f"crisp,task.train_fraction={f},seed={s}" for s in (0, 1, 2) for f in (0.2, 0.3)]
    assert [p.group for p in pts] == [f"crisp,task.train_fraction={f}" for f in (0.2, 0.3)] * 3
    for p in pts:
        assert (p.seed, p.config.train.seed, p.config.selection.seed, p.config.task.seed, p.config.cluster.seed) == (p.seed, p.seed, p.seed, 0, 0)
    # seed 0 is the default seed: its configs are the unseeded study's, so its stages are the ones an unseeded run cached
    unseeded = points(plain, "tiny", with_seeds=True)
    assert [to_dict(p.config) for p in pts[:2]] == [to_dict(p.config) for p in unseeded]
    # without seeds nothing changes: names, groups, configs, and so the study hash a store is found by
    assert [p.name for p in unseeded] == [p.group for p in unseeded] == [p.name for p in points(plain, "tiny")]
    assert all(p.seed is None for p in unseeded)
    assert stable_hash([to_dict(p.config) for p in unseeded]) == stable_hash([to_dict(p.config) for p in points(plain, "tiny")])
    # without with_seeds: one point per group (what `crisp study show` prints)
    assert [p.name for p in points(seeded, "tiny")] == [p.group for p in pts[:2]]
    # a study with no variants and no grid
    bare = load_study(write_study(tmp_path, dict(MICRO_STUDY, name="bare", grid={}, seeds=[3])))
    assert [(p.name, p.group) for p in points(bare, "tiny", with_seeds=True)] == [("seed=3", "default")]


def test_seeds_errors_name_the_file_and_key(tmp_path):
    from crisp_pl.config import ConfigError
    from crisp_pl.study import points

    for seeds, message in (([], "seeds must be a non-empty list of integers"), ([0, "1"], "seeds must be a non-empty list"),
                           ([1, 1], "seeds repeat a value")):
        with pytest.raises(ConfigError, match=message):
            load_study(write_study(tmp_path, dict(MICRO_STUDY, seeds=seeds)))
    with pytest.raises(ConfigError, match=r"micro.yaml: grid.train.seed is set by the study's seeds"):
        load_study(write_study(tmp_path, dict(MICRO_STUDY, grid={"train.seed": [0, 1]}, seeds=[0, 1])))
    with pytest.raises(ConfigError, match=r"variants.x.selection.seed is set by the study's seeds"):
        load_study(write_study(tmp_path, dict(MICRO_STUDY, variants={"x": {"selection.seed": 3}}, seeds=[0])))
    seeded = load_study(write_study(tmp_path, dict(MICRO_STUDY, seeds=[0, 1])))
    with pytest.raises(ConfigError, match=r"seed=0: --set overrides train.seed or selection.seed"):
        points(seeded, "tiny", ["train.seed=5"], with_seeds=True)


def test_runs_logged_before_seed_tags_read_back_as_their_own_group(tmp_path):
    from crisp_pl.config import TrackingConfig
    from crisp_pl.tracking import Tracker

    tracker = Tracker(TrackingConfig(), tmp_path)
    parent = tracker.create_run("p", {"crisp.kind": "study"}, {}).run_id
    old = tracker.create_run("old", {"crisp.parent": parent, "crisp.point": "selection.method=crisp", "crisp.method": "crisp",
                                     "crisp.task": "medical"}, {"train": {"seed": 4}, "finetune": {"enabled": False}}).run_id
    new = tracker.create_run("new", {"crisp.parent": parent, "crisp.point": "crisp+ft,seed=1", "crisp.method": "crisp",
                                     "crisp.task": "medical", "crisp.seed": "1", "crisp.group": "crisp+ft"},
                             {"train": {"seed": 1}, "finetune": {"enabled": True}}).run_id
    for run_id in (old, new):
        tracker.end_run(run_id, "FINISHED")
    runs = tracker.finished_children(parent).set_index("run_id")
    assert runs.loc[old, ["point", "group", "seed", "finetune"]].tolist() == ["selection.method=crisp", "selection.method=crisp", 4, False]
    assert runs.loc[new, ["point", "group", "seed", "finetune"]].tolist() == ["crisp+ft,seed=1", "crisp+ft", 1, True]


@pytest.mark.slow
def test_seeded_micro_study_shares_seedless_stages_and_reports_over_seeds(tmp_path):
    results = tmp_path / "results"
    runner = StudyRunner(load_study(write_study(tmp_path, SEEDED_STUDY)), "tiny", [f"results_dir={results}"])
    rows = runner.run()
    names = [f"{v},seed={s}" for s in (0, 1) for v in ("generalist", "crisp", "crisp+ft")]
    assert [r["point"] for r in rows] == names
    tags = {r["point"]: runner.client.get_run(r["run_id"]).data.tags for r in rows}
    params = {r["point"]: runner.client.get_run(r["run_id"]).data.params for r in rows}
    for name in names:
        group, seed = name.rsplit(",seed=", 1)
        assert (tags[name]["crisp.seed"], tags[name]["crisp.group"], tags[name]["crisp.point"]) == (seed, group, name)
        assert (params[name]["train.seed"], params[name]["selection.seed"]) == (seed, seed)
        assert (params[name]["task.seed"], params[name]["cluster.seed"]) == ("0", "0")

    # what leaves the seed out of its key is computed once; training (and what follows it) once per seed
    stages = {}
    for folder in (results / "cache").glob("*/*"):
        if folder.is_dir() and not folder.name.endswith(".partial"):  # not the KEY.lock files beside them
            stages[folder.parent.name] = stages.get(folder.parent.name, 0) + 1
    assert stages["tree"] == 1 and stages["embeddings"] == 2  # one tree; pool and specialist-train embeddings, once each
    assert stages["selection"] == 2  # uniform and crisp, each shared by both seeds (and crisp by crisp+ft)
    assert stages["train"] == 4 and stages["finetune"] == 2 and stages["eval"] == 6  # crisp+ft fine-tunes crisp's pretrained model
    stage_keys = {r["point"]: runner.tracker.read_json_artifact(r["run_id"], "stages.json") for r in rows}
    key = {name: {stage: stage_keys[name].get(stage) for stage in ("tree", "selection", "train", "model")} for name in names}
    assert key["crisp,seed=0"]["selection"] == key["crisp,seed=1"]["selection"] == key["crisp+ft,seed=1"]["selection"]
    assert key["crisp,seed=0"]["train"] != key["crisp,seed=1"]["train"]
    assert key["crisp+ft,seed=1"]["train"] == key["crisp,seed=1"]["train"] != key["crisp+ft,seed=1"]["model"]
    assert len({k["tree"] for n, k in key.items() if n.startswith("crisp")}) == 1 and key["generalist,seed=0"]["tree"] is None

    study = runner.results()
    assert list(study.runs["point"]) == names
    assert list(study.runs["group"]) == ["generalist", "crisp", "crisp+ft"] * 2 and list(study.runs["seed"]) == [0] * 3 + [1] * 3
    assert list(study.runs["finetune"]) == [False, False, True] * 2
    assert set(study.histograms) == {"crisp", "crisp+ft"}  # one per group: the selection is the same for every seed

    from analysis.figures import draw_study

    study.folder.mkdir(parents=True)
    (study.folder / "histogram-dropped_group.png").write_bytes(b"drawn by an older run of the study")
    paths = draw_study(study)
    assert sorted(study.folder.iterdir()) == sorted(paths)  # the folder is this drawing's, whole: nothing stale
    assert {p.name for p in paths} >= {"results.png", "val_loss.png", "results.md", "histogram-crisp.png"}
    assert "histogram-crisp+ft.png" not in {p.name for p in paths}  # crisp+ft drew from crisp's selection: one figure
    assert "one selection, drawn by: `crisp`, `crisp+ft`" in (study.folder / "index.md").read_text()
    text = (study.folder / "results.md").read_text()
    assert "±" in text and "#### Paired differences against the generalist (`generalist`)" in text
    assert "#### Paired differences against CRISP (`crisp`)" in text
    assert [" ".join(line.split()).split(" | ")[1] for line in text.splitlines() if line.startswith("| crisp+ft")][:3] == ["2"] * 3

    # the study with one more seed is another run (another parent): its status finds these points done under this one
    import dataclasses

    wider = StudyRunner(dataclasses.replace(runner.study, seeds=[0, 1, 2]), "tiny", [f"results_dir={results}"])
    status = {row["point"]: (row["state"], row["run_id"]) for row in wider.status()}
    assert {name: status[name] for name in names} == {r["point"]: ("elsewhere", r["run_id"]) for r in rows}
    assert [status[f"{v},seed=2"] for v in ("generalist", "crisp", "crisp+ft")] == [("pending", "")] * 3


def test_a_study_is_named_again_the_way_it_can_be_found(tmp_path):
    from crisp_pl.study import load_study

    assert load_study("quickstart").ref == "quickstart"
    own = tmp_path / "mine.yaml"
    own.write_text("name: quickstart\ngrid: {selection.method: [uniform]}\n")  # a study's name need not be its file's
    assert load_study(str(own)).ref == str(own)


def test_a_study_given_by_path_is_found_again_by_its_name(tmp_path, monkeypatch):
    from crisp_pl.config import ConfigError
    from crisp_pl.study import load_study

    monkeypatch.setenv("CRISP_CACHE", str(tmp_path / "home"))  # the user's crisp_pl folder, where the names are kept
    own = tmp_path / "elsewhere" / "study.yaml"
    own.parent.mkdir()
    own.write_text("name: my_domain\ngrid: {selection.method: [uniform]}\n")
    with pytest.raises(ConfigError, match="no study 'my_domain'"):
        load_study("my_domain")
    load_study(str(own))
    assert load_study("my_domain").path == own.resolve()  # `crisp figures my_domain` after `crisp study run PATH`
    own.unlink()
    with pytest.raises(ConfigError, match="no study 'my_domain'"):
        load_study("my_domain")  # a moved or deleted file is not found by a stale name


def test_a_results_folder_moved_elsewhere_opens_with_its_artifacts(tmp_path):
    import shutil

    spec = dict(SEEDED_STUDY, name="moved", seeds=[0], variants={"crisp": {"selection.method": "crisp"}})
    study_file = write_study(tmp_path, spec)
    StudyRunner(load_study(study_file), "tiny", [f"results_dir={tmp_path / 'here'}"]).run()
    shutil.move(tmp_path / "here", tmp_path / "there")  # to a laptop, to shared storage: the old path is gone

    runner = StudyRunner(load_study(study_file), "tiny", [f"results_dir={tmp_path / 'there'}"])
    results = runner.results()
    assert len(results.histograms["crisp"]) == 16 and len(results.coverage["crisp"])  # artifacts read from the new place
    run = runner.client.get_run(results.runs["run_id"][0])
    assert run.info.artifact_uri.startswith((tmp_path / "there").resolve().as_uri())
    assert run.data.tags["crisp.checkpoint"].startswith(str((tmp_path / "there").resolve()))
    assert Path(run.data.tags["crisp.checkpoint"]).is_file()


@pytest.mark.slow
def test_studies_logging_to_two_results_folders_share_one_stage_cache(tmp_path, capsys):
    from crisp_pl.cli import main

    spec = dict(SEEDED_STUDY, name="shared", seeds=[0], variants={"crisp": {"selection.method": "crisp"}})
    study_file, stages = write_study(tmp_path, spec), tmp_path / "stages"
    first = StudyRunner(load_study(study_file), "tiny", [f"results_dir={tmp_path / 'a'}", f"cache_dir={stages}"])
    first.run()
    built = {p: p.stat().st_mtime for p in stages.glob("*/*")}
    assert {p.parent.name for p in built} >= {"pool", "embeddings", "tree", "train"}

    second = StudyRunner(load_study(study_file), "tiny", [f"results_dir={tmp_path / 'b'}", f"cache_dir={stages}"])
    assert second.study_hash == first.study_hash  # where the stages lie is not what the study is
    rows = second.run()
    assert {p: p.stat().st_mtime for p in stages.glob("*/*")} == built  # every stage read, none built again
    assert not (tmp_path / "a" / "cache").exists() and not (tmp_path / "b" / "cache").exists()
    assert (tmp_path / "b" / "mlflow.db").is_file() and len(rows) == 1  # logged in its own folder

    assert main(["inspect", rows[0]["run_id"], "--results-dir", str(tmp_path / "b"), "--top", "1"]) == 0  # the logged cache
    assert capsys.readouterr().out.count("\ncluster ") == 1
    assert main(["inspect", rows[0]["run_id"], "--results-dir", str(tmp_path / "b"), "--cache-dir", str(tmp_path)]) == 2
    assert f"not in the stage cache {tmp_path}" in capsys.readouterr().err
