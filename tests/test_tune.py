"""`crisp tune`: the search block's checks, pruning through a real Lightning run, and a real Optuna
search killed with SIGKILL mid-trial that resumes in its SQLite storage and MLflow store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY_DATA

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, build_run_config, to_dict
from crisp_pl.study import Study, load_study, points
from crisp_pl.training.pruning import PruneOnValidation
from crisp_pl.tune import Search

ROOT = Path(__file__).resolve().parent.parent


def test_a_search_block_is_checked_key_by_key(tmp_path):
    study = Study("s", variants={"crisp": {}}, path=tmp_path / "s.yaml")
    for search, match in (({}, "no `search` block"), ({"params": {}}, "search.params"),
                          ({"params": {"train.lr": {"low": 1}}}, "search.params.train.lr"),
                          ({"params": {"train.lr": {"low": 2, "high": 1}}}, "low must be below high"),
                          ({"params": {"train.lr": {"choices": [1]}}, "variant": "ced"}, "no variant 'ced'"),
                          ({"params": {"train.lr": {"choices": [1]}}, "trials": 3}, "search.trials: unknown key")):
        with pytest.raises(ConfigError, match=match):
            Search.of(Study("s", variants={"crisp": {}}, search=search, path=study.path))


def test_every_shipped_search_block_parses():
    from crisp_pl.study import list_studies

    searched = [s for s in list_studies() if s.search]
    assert searched and all(Search.of(s).params for s in searched)


def test_a_trial_the_pruner_rejects_stops_at_its_first_validation(tiny_config):
    import optuna

    from crisp_pl.stages import run_point

    search = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # every loss is above 0: prune
    trial = search.ask()
    cfg = build_run_config(to_dict(tiny_config), {"selection": {"method": "uniform"}, "train": {"lr": 2e-3}})
    with pytest.raises(optuna.TrialPruned):
        run_point(cfg, StageCache(f"{cfg.results_dir}/cache"), train_callbacks=[PruneOnValidation(trial)])
    assert list(search.trials[0].intermediate_values) == [cfg.train.val_every]  # reported once, then stopped


def _states(storage: str, name: str) -> list[str]:
    import optuna

    try:
        return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]
    except KeyError:  # not created yet
        return []


def _drawn_running(storage: str, name: str) -> int:
    """How many values the running trial has drawn (0 when none runs)."""
    import optuna

    try:
        running = [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.state.name == "RUNNING"]
    except KeyError:
        return 0
    return len(running[0].params) if running else 0


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_and_writes_its_tuned_study(tmp_path):
    import optuna

    from crisp_pl.cli import main
    from crisp_pl.tracking import Tracker

    config = {**TINY_DATA, "selection": {"method": "uniform"},
              "train": {**TINY_DATA["train"], "max_steps": 16, "val_every": 4}}
    study_file = tmp_path / "tunable.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "tunable", "config": config, "variants": {"uniform": {}}, "grid": {"train.warmup_steps": [2, 3]},
        "search": {"variant": "uniform", "params": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                                     "train.warmup_steps": {"low": 0, "high": 4}}}}))
    args = ["tune", str(study_file), "--trials", "3", "--set", f"results_dir={tmp_path}"]
    storage, name = f"sqlite:///{tmp_path / 'optuna.db'}", "tunable-tiny"
    process = subprocess.Popen([sys.executable, "-m", "crisp_pl.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.time() + 600
        # a finished trial, and the next one running with both of its values drawn (killed between its creation and
        # its draws, it would have nothing to try again: a race the machine's load decides)
        while not (set(_states(storage, name)) & {"COMPLETE", "PRUNED"} and _drawn_running(storage, name) == 2):
            assert process.poll() is None and time.time() < deadline, "the search ended before it could be killed"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)  # inside the second trial
    finally:
        process.wait()

    assert main(args) == 0
    trials = optuna.load_study(study_name=name, storage=storage).trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and sum(s in ("COMPLETE", "PRUNED") for s in states) == 3, states
    killed = next(t for t in trials if t.state.name == "FAIL")
    assert any(t.params == killed.params for t in trials if t.number > killed.number)  # its values tried again

    tracker = Tracker(build_run_config({"results_dir": str(tmp_path)}).tracking, tmp_path)
    parent = tracker.find_run({"crisp.kind": "search", "crisp.study": "tunable"})
    finished = tracker.client.search_runs([tracker.experiment], f"tags.`crisp.parent` = '{parent.run_id}' and attributes.status = 'FINISHED'")
    assert len(finished) == states.count("COMPLETE") and all("val/loss" in r.data.metrics for r in finished)
    killed_run = tracker.find_run({"crisp.parent": parent.run_id, "crisp.trial": str(killed.number)})
    assert killed_run is None or killed_run.status == "FAILED"  # killed before or after its run was created

    tuned = load_study(str(tmp_path / "tuned" / "tunable-tiny.yaml"))
    best = optuna.load_study(study_name=name, storage=storage).best_params
    assert set(tuned.variants) == {"uniform", "uniform+tuned"} and tuned.variants["uniform+tuned"] == best
    assert tuned.variants["uniform"] == {"train.warmup_steps": 2} and not tuned.grid  # a searched grid key leaves the grid
    tuned_point = [p for p in points(tuned) if p.variant == "uniform+tuned"][0]
    assert tuned_point.config.train.lr == best["train.lr"]
    assert (tmp_path / "figures" / "tunable-tiny" / "search" / "history.png").is_file()
