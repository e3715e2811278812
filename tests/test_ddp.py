"""Multi-process training on CPU, as a GPU cluster runs it: `torchrun` starts the same `crisp study run`
in two processes, Lightning's DDP joins them over gloo, rank 0 builds the data stages and logs to
MLflow while rank 1 waits for them in the cache and trains its share of every training stage. Killed as
the first mid-run checkpoint is written and rerun, the same command ends with the same bytes in every
stage (checkpoints: the same tensors) and the same metrics as the uninterrupted DDP run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crisp_pl.stages.training import TrainRecord
from crisp_pl.study import StudyRunner, load_study
from crisp_pl.ui import free_port
from tests.test_kill import KILLER, assert_same_outputs, final_metrics
from tests.test_study import SEEDED_STUDY, write_study


@pytest.mark.slow
def test_a_study_trains_under_ddp_in_two_processes(tmp_path):
    spec = dict(SEEDED_STUDY, name="ddp", seeds=[0])
    study_file = Path(write_study(tmp_path, spec))
    results = tmp_path / "results"
    ddp = ["train.devices=2", "train.strategy=ddp", "train.accelerator=cpu"]
    sets = [f"results_dir={results}", *ddp]

    def torchrun(folder: Path, *program: str) -> subprocess.CompletedProcess:
        command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={free_port()}", *program,
                   "study", "run", str(study_file), *[x for s in (f"results_dir={folder}", *ddp) for x in ("--set", s)]]
        return subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})

    done = torchrun(results, "-m", "crisp_pl.cli")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    runner = StudyRunner(load_study(str(study_file)), "tiny", sets)
    assert [r["state"] for r in runner.status()] == ["done"] * 3
    children = runner.client.search_runs([runner.tracker.experiment], "tags.`crisp.kind` = 'point'")
    assert len(children) == 3  # rank 1 logged nothing
    runs = runner.results().runs.set_index("group")
    steps, per_device = SEEDED_STUDY["config"]["train"]["max_steps"], SEEDED_STUDY["config"]["train"]["batch_size"]
    for group in ("generalist", "crisp"):
        # tokens and FLOPs add up over the two ranks: each drew its own batch of `batch_size` windows a step
        assert runs.loc[group, "train/final_tokens"] == steps * per_device * 2 * 63
        assert runs.loc[group, "data/samples"] == steps * per_device * 2
        assert runs.loc[group, "train/final_devices"] == 2
    train = [TrainRecord.load(e) for e, _ in runner.cache.finished("train")]
    assert len(train) == 2 and all(r.devices == 2 and r.steps == steps for r in train)
    assert runs.loc["crisp+ft", "finetune/devices"] == 2

    # killed as the first mid-run checkpoint is written, rerun: the same models and metrics, bit for bit
    killed = tmp_path / "killed"
    rigged = tmp_path / "killer.py"
    rigged.write_text(KILLER)
    cut = torchrun(killed, str(rigged), "train:checkpoints/*.ckpt")
    assert cut.returncode != 0 and list((killed / "cache" / "train").glob("*.partial/checkpoints/*.ckpt")), cut.stdout[-3000:] + cut.stderr[-5000:]
    done = torchrun(killed, "-m", "crisp_pl.cli")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_outputs(results, killed)
    resumed = StudyRunner(load_study(str(study_file)), "tiny", [f"results_dir={killed}", *ddp])
    assert json.dumps(final_metrics(resumed), sort_keys=True) == json.dumps(final_metrics(runner), sort_keys=True)  # NaN == NaN


PREPARE = r"""
import sys
import numpy as np
from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config
from crisp_pl.embed import load_embeddings
from crisp_pl.stages.data import prepare
from tests.test_study import MICRO_STUDY

cfg = build_run_config(MICRO_STUDY["config"], {"results_dir": sys.argv[1], "embed": {"shard_rows": 40}})
prepared = prepare(StageCache(sys.argv[1] + "/cache"), cfg, need_embeddings=True)
np.save(sys.argv[1] + "/pool.npy", load_embeddings(prepared.embeddings["pool"].path))
np.save(sys.argv[1] + "/train.npy", load_embeddings(prepared.embeddings["train"].path))
"""


@pytest.mark.slow
def test_embedding_shards_split_over_processes_give_the_one_process_embeddings(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    one, two = tmp_path / "one", tmp_path / "two"
    alone = subprocess.run([sys.executable, "-c", PREPARE, str(one)], capture_output=True, text=True, timeout=600, env=env)
    assert alone.returncode == 0, alone.stderr[-3000:]
    script = tmp_path / "prepare.py"
    script.write_text(PREPARE)
    shared = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={free_port()}",
                             str(script), str(two)], capture_output=True, text=True, timeout=600, env=env)
    assert shared.returncode == 0, shared.stderr[-3000:]
    for name in ("pool", "train"):
        a, b = np.load(one / f"{name}.npy"), np.load(two / f"{name}.npy")
        assert a.shape == b.shape and len(a) > 80 and np.array_equal(a, b), name  # several shards, the same bits
    finished = [p for p in (two / "cache" / "embeddings").iterdir() if p.is_dir()]
    assert len(finished) == 2 and not list((two / "cache" / "embeddings").glob("*.partial"))
    assert sorted(len(list(p.glob("emb-*.npy"))) for p in finished) == sorted(-(-len(np.load(two / f"{n}.npy")) // 40) for n in ("pool", "train"))
