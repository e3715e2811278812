"""The LightningDataModule that trains on any selection.

Training windows come from `crisp_pl.sampling.GroupSampler` (a group from the weights, then a
window uniformly inside it, as a pure function of the stream position); validation windows are
the specialist validation store read in order.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crisp_pl.sampling import Groups, GroupSampler


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
    checkpoint (always at an optimizer-step boundary), and the sampler restarts at sample
    `global_step * batch_size * accumulate` of the stream.
    """

    def __init__(self, train_store, groups: Groups, *, batch_size: int, max_steps: int, seed: int,
                 val_store=None, val_batch_size: int = 16, val_windows: int | None = None, num_workers: int = 0,
                 accumulate: int = 1):
        super().__init__()
        self.train_store, self.groups, self.val_store = train_store, groups, val_store  # groups index train_store
        self.batch_size, self.max_steps, self.seed, self.accumulate = batch_size, max_steps, seed, accumulate
        self.val_batch_size, self.val_windows, self.num_workers = val_batch_size, val_windows, num_workers

    @property
    def num_samples(self) -> int:
        """Samples per rank over the whole run."""
        return self.max_steps * self.batch_size * self.accumulate

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
        """Samples this rank has trained on: `accumulate` micro batches per optimizer step."""
        return self.trainer.global_step * self.batch_size * self.accumulate if self.trainer else 0
