"""Sampling at the bottom: the `Groups` every selection method produces, and the draw from them.

Training draws a group from `weights`, then a window uniformly inside it (the paper's Algorithm 1).
CRISP makes one group per cluster weighted by P(c|Ds); the generalist baseline is one group of the
whole pool; specialist-only is one group of the specialist train windows. Groups are stored CSR
style: the members of group g are `members[offsets[g]:offsets[g + 1]]`.

`GroupSampler` draws sample i of rank r as: a group from the weights, then a window uniformly
inside it. Draws come in fixed-size blocks, each from its own generator seeded by
(seed, rank, block), so the stream is a pure function of its position: resuming at sample k is
exact and costs O(1), and every DDP rank draws a distinct stream without coordination.

This module imports no Lightning: selection methods and training both stand on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Sampler


@dataclass
class Groups:
    store: str
    """Which window store the members index into: `pool` (generalist), `train` (specialist), or
    `pool+train` (the two joined: train window j is member len(pool) + j; see `mix`)."""
    offsets: np.ndarray
    """(G + 1,) int64, CSR offsets into `members`."""
    members: np.ndarray
    """(M,) int64 window indices, grouped."""
    weights: np.ndarray
    """(G,) float64 sampling probability of each group; sums to 1; zero for empty groups."""
    info: dict = field(default_factory=dict)
    """Method-specific facts to log (dropped mass, number of non-empty groups, ...)."""

    def __post_init__(self):
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.members = np.asarray(self.members, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        sizes = self.sizes
        if len(self.weights) != len(sizes):
            raise ValueError(f"{len(self.weights)} weights for {len(sizes)} groups")
        if (self.weights < 0).any() or not np.isclose(self.weights.sum(), 1.0):
            raise ValueError("group weights must be non-negative and sum to 1")
        if (self.weights[sizes == 0] > 0).any():
            raise ValueError("an empty group has a positive weight")

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_groups(self) -> int:
        return len(self.weights)

    @classmethod
    def single(cls, store: str, n_windows: int, info: dict | None = None) -> "Groups":
        """One group holding every window of `store` (uniform sampling)."""
        return cls.of(store, np.arange(n_windows), info)

    @classmethod
    def of(cls, store: str, windows: np.ndarray, info: dict | None = None) -> "Groups":
        """One group holding `windows` of `store`, drawn uniformly."""
        return cls(store, np.array([0, len(windows)]), windows, np.array([1.0]), info or {})

    @classmethod
    def from_labels(cls, store: str, labels: np.ndarray, weights: np.ndarray, info: dict | None = None) -> "Groups":
        """Group windows by integer label in [0, len(weights)) (a cluster id per window)."""
        labels = np.asarray(labels, dtype=np.int64)
        members = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=len(weights))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(store, offsets, members, weights, info or {})

    def digest(self) -> str:
        """A hash of what draws from these groups read: the store, the members and the weights (not `info`)."""
        h = hashlib.sha256(self.store.encode())
        for array in (self.offsets, self.members, self.weights):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "groups.npz", offsets=self.offsets, members=self.members, weights=self.weights)
        (folder / "groups.json").write_text(json.dumps({"store": self.store, "info": self.info}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "Groups":
        arrays = np.load(folder / "groups.npz")
        meta = json.loads((folder / "groups.json").read_text())
        return cls(meta["store"], arrays["offsets"], arrays["members"], arrays["weights"], meta["info"])


MIXED_STORE = "pool+train"


def mix(groups: Groups, train_windows: np.ndarray, share: float, pool_windows: int) -> Groups:
    """`groups` over the pool plus one group of specialist `train_windows` (indices into the train store)
    drawn with probability `share`, over the joined store: the replay of in-domain data during selected
    pretraining, in one sampler, so repetition counts both stores."""
    if groups.store != "pool":
        raise ValueError(f"selection.mix.specialist mixes specialist windows into a pool selection; this one draws "
                         f"from the {groups.store!r} store")
    members = np.concatenate([groups.members, pool_windows + np.asarray(train_windows, np.int64)])
    offsets = np.concatenate([groups.offsets, [len(members)]])
    weights = np.concatenate([groups.weights * (1.0 - share), [share]])
    return Groups(MIXED_STORE, offsets, members, weights, {**groups.info, "mix_specialist": share})


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
