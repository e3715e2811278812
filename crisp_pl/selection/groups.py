"""The one abstraction every selection method produces: groups of windows with a weight per group.

Training draws a group from `weights`, then a window uniformly inside it (the paper's Algorithm 1).
CRISP makes one group per cluster weighted by P(c|Ds); the generalist baseline is one group of the
whole pool; specialist-only is one group of the specialist train windows. Groups are stored CSR
style: the members of group g are `members[offsets[g]:offsets[g + 1]]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Groups:
    store: str
    """Which window store the members index into: `pool` (generalist) or `train` (specialist)."""
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
        return cls(store, np.array([0, n_windows]), np.arange(n_windows), np.array([1.0]), info or {})

    @classmethod
    def from_labels(cls, store: str, labels: np.ndarray, weights: np.ndarray, info: dict | None = None) -> "Groups":
        """Group windows by integer label in [0, len(weights)) (a cluster id per window)."""
        labels = np.asarray(labels, dtype=np.int64)
        members = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=len(weights))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(store, offsets, members, weights, info or {})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "groups.npz", offsets=self.offsets, members=self.members, weights=self.weights)
        (folder / "groups.json").write_text(json.dumps({"store": self.store, "info": self.info}, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "Groups":
        arrays = np.load(folder / "groups.npz")
        meta = json.loads((folder / "groups.json").read_text())
        return cls(meta["store"], arrays["offsets"], arrays["members"], arrays["weights"], meta["info"])
