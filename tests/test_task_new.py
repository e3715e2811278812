"""`crisp task new`: from a folder of the user's text files to a task preset and a study that runs
end to end through the real stages (shrunk), with the files held out of the pool."""

import dataclasses

import pandas as pd
import pytest

from crisp_pl import workspace
from crisp_pl.config import ConfigError, SourceConfig, build_run_config
from crisp_pl.corpus.readers import read_source
from crisp_pl.study import StudyRunner, load_study, points


@pytest.fixture
def folder(tmp_path):
    """30 real documents (the built-in Shakespeare source), one .txt file each."""
    docs = list(read_source(SourceConfig(name="shakespeare"), max_docs=30, max_chars=1500))
    out = tmp_path / "my_files"
    out.mkdir()
    for i, doc in enumerate(docs):
        (out / f"doc{i:02d}.txt").write_text(doc.text)
    return out


@pytest.mark.slow
def test_a_folder_of_text_files_becomes_a_task_and_a_study_that_runs(folder, tmp_path, capsys, monkeypatch):
    from crisp_pl.cli import main

    # a fixed name: the split hashes the ids (name:file), and this one gives 13 / 3 / 14 train / validation / test
    # documents (a random name left validation empty, and fine-tuning impossible, about one run in 25)
    name = "mine_fixed"
    assert main(["init", str(tmp_path / "ws")]) == 0
    monkeypatch.setenv(workspace.ENV, str(tmp_path / "ws"))
    preset, study_file = tmp_path / "ws" / "configs" / "tasks" / f"{name}.yaml", tmp_path / "ws" / "studies" / f"{name}.yaml"
    assert main(["task", "new", name, "--from", str(folder), "--study"]) == 0
    assert "30 documents" in preset.read_text()
    task = build_run_config({"task": name}).task
    assert task.sources == [name] and task.extra_sources[0].kind == "text"
    assert main(["task", "new", name, "--from", str(folder)]) == 2  # never overwritten silently
    assert "exists; pass --force" in capsys.readouterr().err
    study = load_study(name)
    assert len(points(study, "tiny", with_seeds=True)) == 12  # 4 methods x 3 seeds
    assert {study.variants[v]["selection.crisp.max_repeats"] for v in ("crisp", "crisp+ft")} == {4}  # new studies plan CRISP's draw
    shrink = ["corpus.sources=[{name: wiki, max_docs: 150}, {name: medical, max_docs: 60}]", "corpus.window_length=64",
              "corpus.bpe_vocab_size=512", "embed.max_seq_length=32", "cluster.levels=[2,4]", "model.size=micro",
              "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=0", "finetune.max_steps=2",
              "finetune.val_every=1", "eval.max_windows=8", f"results_dir={tmp_path / 'results'}"]
    runner = StudyRunner(dataclasses.replace(study, seeds=[0]), "tiny", shrink)
    rows = runner.run()
    assert len(rows) == 4 and all(row[f"test/{name}/ppl"] > 1 for row in rows)
    pool_docs = next((tmp_path / "results" / "cache" / "pool").glob("*/pool/docs.parquet"))
    pool_sources = set(pd.read_parquet(pool_docs)["source"])
    assert name not in pool_sources  # the user's files never join the generalist pool
    assert not (workspace.builtin("configs") / "tasks" / f"{name}.yaml").exists()  # nothing written beside the built-ins


def test_too_few_or_unreadable_files_fail_before_anything_is_written(tmp_path):
    from crisp_pl.task_new import new_task

    (tmp_path / "one.txt").write_text("a single document")
    with pytest.raises(ConfigError, match="1 documents"):
        new_task("tiny_one", str(tmp_path), folder=tmp_path / "ws")
    with pytest.raises(ConfigError, match="cannot tell the kind"):
        new_task("odd", str(tmp_path / "data.bin"), folder=tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_without_a_workspace_task_new_refuses_and_names_crisp_init(folder, tmp_path, monkeypatch, capsys):
    from crisp_pl.cli import main

    monkeypatch.delenv(workspace.ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no crisp-workspace.yaml here or above
    assert main(["task", "new", "mine", "--from", str(folder)]) == 2
    assert "crisp init" in capsys.readouterr().err
    assert not (workspace.builtin("configs") / "tasks" / "mine.yaml").exists()
