"""The group sampler and the LightningDataModule that trains on any selection.

`GroupSampler` draws sample i of rank r as: a group from the weights, then a window uniformly
inside it. Draws come in fixed-size blocks, each from its own generator seeded by
(seed, rank, block), so the stream is a pure function of its position: resuming at sample k is
exact and costs O(1), and every DDP rank draws a distinct stream without coordination.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from crisp_pl.selection import Groups

BLOCK = 4096  # draws per generator; any fixed value works, it only must never change


def draw_block(groups: Groups, seed: int, rank: int, block: int) -> np.ndarray:
    """The window indices of one block of BLOCK draws."""
    rng = np.random.default_rng([seed, rank, block])
    g = rng.choice(groups.num_groups, size=BLOCK, p=groups.weights)  # (BLOCK,) group ids
    u = rng.random(BLOCK)
    sizes = groups.sizes[g]
    position = groups.offsets[g] + np.minimum((u * sizes).astype(np.int64), sizes - 1)
    return groups.members[position]


def draw(groups: Groups, seed: int, rank: int, start: int, stop: int) -> np.ndarray:
    """Window indices of samples [start, stop) of rank `rank`'s stream."""
    first, last = start // BLOCK, (stop - 1) // BLOCK
    blocks = [draw_block(groups, seed, rank, b) for b in range(first, last + 1)]
    stream = np.concatenate(blocks) if blocks else np.empty(0, np.int64)
    return stream[start - first * BLOCK : stop - first * BLOCK]


class GroupSampler(Sampler[int]):
    """Yields one rank's stream from position `start()` up to `num_samples`.

    `start` is read each time iteration begins, because Lightning re-creates the iterator after the
    first batch of a resumed run: reading the trainer's restored step then keeps the stream exact.
    """

    def __init__(self, groups: Groups, num_samples: int, seed: int, rank: int = 0, start: Callable[[], int] = lambda: 0):
        self.groups, self.num_samples, self.seed, self.rank, self.start = groups, num_samples, seed, rank, start

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start())

    def __iter__(self) -> Iterator[int]:
        for block_start in range(self.start(), self.num_samples, BLOCK):
            yield from draw(self.groups, self.seed, self.rank, block_start, min(block_start + BLOCK, self.num_samples)).tolist()


def repetition_stats(groups: Groups, num_samples: int, seed: int, world_size: int = 1) -> dict[str, float]:
    """How often training windows repeat over a whole run (all ranks), recomputed from the stream."""
    drawn = np.concatenate([draw(groups, seed, r, 0, num_samples) for r in range(world_size)])
    counts = np.bincount(drawn)
    counts = counts[counts > 0]
    return {
        "data/samples": float(len(drawn)),
        "data/unique_windows": float(len(counts)),
        "data/mean_repeats": float(counts.mean()),
        "data/max_repeats": float(counts.max()),
        "data/available_windows": float(groups.sizes.sum()),
    }


class WindowDataset(Dataset):
    """Token windows of a WindowStore as int64 tensors of shape (L,)."""

    def __init__(self, store, limit: int | None = None):
        self.store = store
        self.n = len(store) if limit is None else min(limit, len(store))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.store.tokens([i])[0], dtype=np.int64))


class SelectionDataModule(L.LightningDataModule):
    """Trains on windows drawn by GroupSampler; validates on specialist validation windows.

    Resuming mid-run needs no state of its own: the trainer restores `global_step` from the
    checkpoint, and the sampler restarts at sample `global_step * batch_size` of the stream.
    """

    def __init__(self, train_store, groups: Groups, *, batch_size: int, max_steps: int, seed: int,
                 val_store=None, val_batch_size: int = 16, val_windows: int | None = None, num_workers: int = 0):
        super().__init__()
        self.train_store, self.groups, self.val_store = train_store, groups, val_store  # groups index train_store
        self.batch_size, self.max_steps, self.seed = batch_size, max_steps, seed
        self.val_batch_size, self.val_windows, self.num_workers = val_batch_size, val_windows, num_workers

    @property
    def num_samples(self) -> int:
        """Samples per rank over the whole run."""
        return self.max_steps * self.batch_size

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer else 0
        sampler = GroupSampler(self.groups, self.num_samples, self.seed, rank, start=self._consumed)
        return DataLoader(WindowDataset(self.train_store), batch_size=self.batch_size,
                          sampler=sampler, num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_store is None:
            return []
        return DataLoader(WindowDataset(self.val_store, self.val_windows), batch_size=self.val_batch_size,
                          num_workers=self.num_workers)

    def _consumed(self) -> int:
        """Samples this rank has trained on (no gradient accumulation: one batch per step)."""
        return self.trainer.global_step * self.batch_size if self.trainer else 0
