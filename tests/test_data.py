"""The group sampler's contract and exact mid-run resume through a real Lightning Trainer."""

import subprocess
import sys

import lightning as L
import numpy as np
import torch

from crisp_pl.sampling import BLOCK, Groups, GroupSampler, draw, repetition_stats
from crisp_pl.selection import crisp_groups
from crisp_pl.training.datamodule import SelectionDataModule


def groups_of(labels, weights):
    return Groups.from_labels("pool", np.array(labels), np.array(weights, dtype=float))


def test_draws_follow_group_weights_then_uniform_inside():
    labels = np.repeat([0, 1, 2], [10, 50, 40])
    groups = groups_of(labels, [0.7, 0.0, 0.3])
    drawn = draw(groups, seed=0, rank=0, start=0, stop=50_000)
    share = np.bincount(labels[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [0.7, 0.0, 0.3], atol=0.01)
    inside = np.bincount(drawn[labels[drawn] == 0], minlength=10)[:10]
    np.testing.assert_allclose(inside / inside.sum(), 0.1, atol=0.01)  # uniform within the group


def test_stream_is_a_function_of_position():
    groups = groups_of(np.arange(1000) % 7, np.full(7, 1 / 7))
    whole = draw(groups, 3, 0, 0, 3 * BLOCK)
    np.testing.assert_array_equal(draw(groups, 3, 0, BLOCK - 5, 2 * BLOCK + 9), whole[BLOCK - 5 : 2 * BLOCK + 9])
    resumed = list(GroupSampler(groups, 3 * BLOCK, seed=3, start=lambda: 1234))
    np.testing.assert_array_equal(resumed, whole[1234:])
    assert not np.array_equal(whole, draw(groups, 4, 0, 0, 3 * BLOCK))  # another seed differs
    assert not np.array_equal(whole, draw(groups, 3, 1, 0, 3 * BLOCK))  # each rank its own stream


def test_same_stream_in_a_fresh_process():
    code = ("import numpy as np; from crisp_pl.sampling import Groups, draw;"
            "g = Groups.from_labels('pool', np.arange(100) % 5, np.full(5, .2)); print(draw(g, 11, 0, 0, 20).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = draw(Groups.from_labels("pool", np.arange(100) % 5, np.full(5, 0.2)), 11, 0, 0, 20).tolist()
    assert out.strip() == str(here)


def test_repetition_stats_count_the_stream():
    groups, _ = crisp_groups(np.arange(20) % 4, np.array([1, 1]), 4)  # all mass on the 5 windows of cluster 1
    stats = repetition_stats(groups, num_samples=100, seed=0, world_size=2)
    assert stats["data/samples"] == 200 and stats["data/unique_windows"] == 5
    assert stats["data/mean_repeats"] == 40 and stats["data/available_windows"] == 20


class ArrayStore:
    """A window store over an in-memory array, the shape of crisp_pl.corpus.windows.WindowStore."""

    def __init__(self, tokens):
        self.array = tokens

    def __len__(self):
        return len(self.array)

    def tokens(self, indices):
        return self.array[list(indices)]


class Recorder(L.LightningModule):
    """Records the first token of every training window it sees (each window's id)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, _):
        self.seen += batch[:, 0].tolist()
        return (self.w * batch.float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path, steps, ckpt=None):
    store = ArrayStore(np.arange(200)[:, None].repeat(4, 1))  # window i holds tokens [i, i, i, i]
    groups = groups_of(np.arange(200) % 10, np.linspace(1, 10, 10) / 55)
    data = SelectionDataModule(store, groups, batch_size=4, max_steps=10, seed=5)
    module = Recorder()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False, default_root_dir=tmp_path, enable_checkpointing=False)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return trainer, module


def test_resume_mid_run_yields_exactly_the_next_batches(tmp_path):
    _, straight = fit(tmp_path, 10)
    first_trainer, first = fit(tmp_path, 6)
    first_trainer.save_checkpoint(tmp_path / "mid.ckpt")
    _, resumed = fit(tmp_path, 10, ckpt=tmp_path / "mid.ckpt")
    assert len(straight.seen) == 40
    assert first.seen == straight.seen[:24]
    assert resumed.seen == straight.seen[24:]
