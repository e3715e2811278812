"""What a selection method reads: one `SelectionContext`, built by the selection stage.

A method sees the window stores, the specialist subset in use, the data stages it declared it
needs (embeddings, cluster labels), a scratch folder, a place for its artifacts, and named random
streams derived from `selection.seed` (crisp_pl.seeds). It never touches global random state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crisp_pl import seeds
from crisp_pl.config import RunConfig


@dataclass
class SelectionContext:
    cfg: RunConfig
    """The run's config; a method reads `cfg.selection` and, for clusters, `cfg.cluster`."""
    pool: object
    """The generalist pool's WindowStore."""
    specialist: object
    """The specialist train windows in use (a WindowSubset when `task.max_train_windows` caps them)."""
    specialist_indices: np.ndarray
    """(S,) indices of `specialist` into the task's whole train store."""
    validation: object | None
    """The specialist validation WindowStore, or None."""
    work_dir: Path
    """Scratch space inside the stage's partial folder (kept if the method fails, for a look)."""
    pool_embeddings: np.ndarray | None = None
    """(N, D) fp16 SBERT rows of the pool, when the method needs embeddings."""
    specialist_embeddings: np.ndarray | None = None
    """(P, D) rows of the specialist documents in use, one per piece of at most `embed.max_seq_length`
    word pieces (a short document is one piece), not per window."""
    specialist_weights: np.ndarray | None = None
    """(P,) weight of each specialist piece in P(c|Ds), for a multitask (its components mixed by
    `task.weights`); None: one count per piece."""
    pool_labels: np.ndarray | None = None
    """(N, levels) cluster id of every pool window at every tree level, when the method needs clusters."""
    specialist_labels: np.ndarray | None = None
    """(P, levels) the cluster ids of those pieces: the units P(c|Ds) counts."""
    validation_labels: np.ndarray | None = None
    """(V, levels) the cluster ids of the specialist validation windows, when the method needs them."""
    artifacts: dict = field(default_factory=dict)
    """File name -> DataFrame (`.csv`) or array (`.npy`) saved beside the groups and logged to MLflow."""

    @property
    def seed(self) -> int:
        return self.cfg.selection.seed

    def rng(self, role: str) -> np.random.Generator:
        """The named random stream `role` of this selection (see crisp_pl.seeds)."""
        return seeds.rng(self.seed, role)

    def stream_seed(self, role: str) -> int:
        """The same stream as an int, to seed torch or a library."""
        return seeds.stream_seed(self.seed, role)
