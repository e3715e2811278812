"""The `crisp` command: listing, showing, errors that name the key, and the MLflow UI over loopback."""

import socket
import subprocess
import sys

import pytest

from crisp_pl.cli import main

CRISP = [sys.executable, "-m", "crisp_pl.cli"]


def test_study_list_and_show(capsys):
    assert main(["study", "list"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["study", "show", "quickstart", "--set", "train.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert out.count("max_steps: 3") == 3 and "# selection.method=crisp" in out
    assert main(["study", "show", "quickstart", "--diff"]) == 0
    diff = capsys.readouterr().out
    assert "  selection.method: crisp\n" in diff and "max_steps" not in diff  # only what tells the points apart
    assert len(diff.splitlines()) < len(out.splitlines()) / 10


def test_config_errors_exit_2_and_name_the_key(capsys):
    assert main(["study", "show", "quickstart", "--set", "train.max_stepz=3"]) == 2
    assert "unknown key 'train.max_stepz'" in capsys.readouterr().err
    assert main(["study", "run", "no_such_study"]) == 2
    assert "known studies: " in capsys.readouterr().err


def test_ui_without_a_store_says_what_to_do(tmp_path, capsys):
    assert main(["ui", "--results-dir", str(tmp_path)]) == 2
    assert "run a study first" in capsys.readouterr().err


def test_ui_names_the_page_that_opens_on_the_runs_table(tmp_path):
    from mlflow.tracking import MlflowClient

    from crisp_pl.ui import runs_url

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").create_experiment("other")
    assert runs_url(store, "127.0.0.1", 5000) == "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
    experiment = MlflowClient(f"sqlite:///{store}").create_experiment("crisp_pl")
    # MLflow 3 opens an experiment on its GenAI pages unless the URL asks for the model-training view
    assert runs_url(store, "127.0.0.1", 5000) == f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning"


def test_ui_on_a_taken_port_says_so_and_fails(tmp_path, capsys):
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert main(["ui", "--results-dir", str(tmp_path), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_mcq_tasks_writes_the_halves_a_study_holds_out(tmp_path, capsys):
    from crisp_pl.config import build_run_config
    from crisp_pl.corpus.tasks import load_task_documents, split_task

    assert main(["mcq-tasks", str(tmp_path), "--sets", "arc_challenge"]) == 0
    assert "arc_challenge_test_half" in capsys.readouterr().out
    from lm_eval.tasks import TaskManager

    assert {"arc_challenge_full", "arc_challenge_test_half"} <= set(TaskManager(include_path=str(tmp_path)).all_tasks)
    written = [line for line in (tmp_path / "arc_challenge_test_half.jsonl").read_text().splitlines() if line]
    cfg = build_run_config({"task": "arc_challenge", "corpus": {"sources": [{"name": "wiki", "max_docs": 5}], "max_docs_per_source": 10}})
    test = split_task(load_task_documents(cfg.corpus, cfg.task, progress=False), cfg.task)["test"]
    assert len(written) == len(test) == 1172 // 2  # the whole set, not capped by the corpus caps


def test_lm_eval_command_hands_flags_to_lm_eval():
    done = subprocess.run(CRISP + ["lm-eval", "run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--include_path" in done.stdout + done.stderr


def test_a_corpus_error_is_one_paragraph_and_debug_shows_the_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    sets = ["--set", f"corpus.sources=[{{name: mine, kind: jsonl, path: '{bad}'}}]", "--set", f"results_dir={tmp_path}"]
    assert main(["study", "run", "quickstart", *sets]) == 2
    err = capsys.readouterr().err
    assert f"crisp: corpus error: {bad}:2: malformed JSON" in err and "Traceback" not in err
    with pytest.raises(Exception, match="malformed JSON"):
        main(["--debug", "study", "run", "quickstart", *sets])


def test_seeds_on_the_command_line_replace_a_study_s_own(capsys):
    from crisp_pl.cli import main

    assert main(["study", "show", "quickstart", "--seeds", "0", "1", "2", "3"]) == 0
    assert "once per seed in [0, 1, 2, 3]" in capsys.readouterr().out
    assert main(["study", "show", "quickstart", "--seeds", "1", "1"]) == 2
    assert "--seeds repeats a value" in capsys.readouterr().err


def test_read_only_commands_create_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["figures", "quickstart", "--set", f"results_dir={results}"]) == 1
    assert "has no runs with this config" in capsys.readouterr().err
    assert main(["study", "status", "quickstart", "--set", f"results_dir={results}"]) == 0
    assert "9 pending of 9 points" in capsys.readouterr().out
    assert not results.exists()  # no store, no folder
