"""The GPU scales before they meet a GPU: `small` and `paper` run end to end on CPU, in two processes
under Lightning's DDP (gloo), with overrides that shrink sizes and steps only. What stays is each
scale's code path: 1024-token windows of GPT-2's tokenizer, its tree depth (3 levels for small, 4 for
paper), the paper's global batch in tokens (so accumulation under DDP), periodic checkpoints and
validation, the DDP strategy, fine-tuning after pretraining, evaluation and MLflow logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crisp_pl import workspace
from crisp_pl.config import load_yaml
from crisp_pl.stages.training import TrainRecord
from crisp_pl.study import StudyRunner, load_study
from crisp_pl.ui import free_port
from tests.test_study import write_study

STUDY = {
    "name": "scales",
    "description": "CRISP and CRISP+FT at a scale's shapes, shrunk",
    "config": {"task": {"name": "medical", "sources": ["medical"], "train_fraction": 0.3, "validation_fraction": 0.1,
                        "test_fraction": 0.2}},
    "grid": {},
    "variants": {"crisp": {"selection.method": "crisp"},
                 "crisp+ft": {"selection.method": "crisp", "finetune.enabled": True}},
    "seeds": [0],
}

# sizes and steps only: fewer documents, clusters per level, layers, steps, windows per step and scored
SHRINK = ["corpus.sources=[{name: medical, max_docs: 300}, {name: wiki, max_docs: 200}, {name: python_stdlib, max_docs: 12}]",
          "corpus.max_chars_per_doc=1500", "model.size=micro", "embed.batch_size=16", "embed.max_seq_length=64",
          "train.max_steps=4", "train.warmup_steps=1", "train.checkpoint_every=2", "train.val_every=2", "train.log_every=1",
          "finetune.max_steps=2", "finetune.val_every=1", "finetune.warmup_steps=0", "eval.max_windows=8", "eval.batch_size=4"]
PER_SCALE = {
    "small": ["cluster.levels=[2, 4, 8]", "train.batch_size=1"],
    # the paper's global batch in tokens, shrunk to 4 windows: 2 ranks x micro batch 1 x 2 accumulated
    "paper": ["cluster.levels=[2, 4, 8, 16]", "train.global_batch_tokens=4096", "train.batch_size=1"],
}
DDP = ["train.devices=2", "train.strategy=ddp", "train.accelerator=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["small", "paper"])
def test_a_gpu_scale_runs_end_to_end_on_cpu_in_two_ddp_processes(scale, tmp_path):
    shape = load_yaml(workspace.builtin("configs") / "scales" / f"{scale}.yaml")
    study_file = write_study(tmp_path, STUDY)
    sets = [f"results_dir={tmp_path / 'results'}", *SHRINK, *PER_SCALE[scale], *DDP]
    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "crisp_pl.cli", "study", "run", study_file, "--scale", scale, *[x for s in sets for x in ("--set", s)]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    runner = StudyRunner(load_study(study_file), scale, sets)
    assert [r["state"] for r in runner.status()] == ["done", "done"]
    config = runner.points[0].config
    assert config.corpus.window_length == shape["corpus"]["window_length"] == 1024 and config.corpus.tokenizer == "gpt2"
    assert len(config.cluster.levels) == len(shape["cluster"]["levels"])  # the scale's tree depth
    assert config.train.strategy == "ddp" and config.train.val_every == 2 and config.train.checkpoint_every == 2
    runs = runner.results().runs.set_index("group")
    assert runs.loc["crisp", "train/final_devices"] == 2 and runs.loc["crisp+ft", "finetune/devices"] == 2
    windows_per_step = 4 if scale == "paper" else 2  # paper: the global batch; small: batch 1 on each of 2 ranks
    assert runs.loc["crisp", "train/final_tokens"] == 4 * windows_per_step * 1023
    record = TrainRecord.load(next(e for e, _ in runner.cache.finished("train")))
    assert (record.micro_batch, record.accumulate) == ((1, 2) if scale == "paper" else (1, 1))
    curve = json.loads((next(e for e, _ in runner.cache.finished("train")).path / "curves.json").read_text())
    assert [step for step, _ in curve["val/loss"]] == [1, 3]  # checks every 2 optimizer steps, accumulation or not
    assert all(1 < runs.loc[g, "test/medical/ppl"] < 1e6 for g in ("crisp", "crisp+ft"))
