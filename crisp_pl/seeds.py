"""Named random streams: every random choice draws from a generator derived from a root seed and a role.

    rng(root, "classifier.negatives")   a numpy Generator for that one purpose
    stream_seed(root, "ced.specialist_lm")  the same stream as a 32-bit int (to seed torch)

A role is a short "owner.purpose" name; the stream depends only on (root, role), so adding a new
random choice never shifts an existing one, and nothing reads or writes global random state.
The roots are config seeds: `selection.seed` for a selection method's own randomness,
`task.seed` for the data split and the specialist subset, `train.seed` for training.

The roles in use:

| role                     | root           | what it draws                                               |
|--------------------------|----------------|-------------------------------------------------------------|
| specialist_subset        | task.seed      | the specialist train windows kept by `task.train_share` or `max_train_windows` |
| classifier.negatives     | selection.seed | the pool windows sampled as the classifier's negatives      |
| classifier.heldout       | selection.seed | the held-out share of each class (its AUC)                  |
| ced.score_subset         | selection.seed | the pool windows CED scores under `max_score_windows`       |
| lsi.fit                  | cluster.seed   | the pool windows the LSI embedder is fitted on, past 200k    |
| ced.specialist_lm        | selection.seed | the specialist LM's init and sample stream                  |
| ced.generalist_lm        | selection.seed | the generalist LM's init and sample stream                  |
| dsir.gumbel              | selection.seed | the Gumbel noise of DSIR's resampling                       |
| doge.proxy               | selection.seed | DoGE's proxy GPT's init                                     |
| doge.draws               | selection.seed | the windows DoGE's proxy reads each step                    |
| coverage.sample          | task.seed      | the pool windows the coverage diagnostic searches and measures (past its caps) |
| inspect.examples         | 0              | the example windows `crisp inspect` shows per cluster       |
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_seed(root: int, role: str) -> int:
    """A 32-bit seed for `role`, derived from `root` (distinct roles give independent streams)."""
    role_key = int.from_bytes(hashlib.sha256(role.encode()).digest()[:8], "little")
    return int(np.random.SeedSequence([root, role_key]).generate_state(1)[0])


def rng(root: int, role: str) -> np.random.Generator:
    """The numpy Generator of `role` under `root`."""
    return np.random.default_rng(stream_seed(root, role))
