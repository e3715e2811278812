"""A split study's finished points as the (N, D, D′, loss) rows the scaling-law fits read.

- N: `model/non_embedding_params` (attention and MLP weights; Kaplan et al.'s convention, which
  keeps a small model's large embedding out of its size);
- D: the generalist tokens: the base's (`base/tokens`), plus the point's own training tokens when it
  trains on uniform draws (more generalist pretraining, not specialization);
- D′ (`Dp`): the point's training tokens on a targeted selection (CRISP, specialist-only, ...);
- loss: the held-out specialist test loss of the point's task (`test/TASK/loss`, nats a token).

A point trained from scratch on CRISP's selection has D = 0; the base itself (train.max_steps = 0)
has D′ = 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["task", "seed", "point", "N", "D", "Dp", "loss"]


def split_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished point of `runs` (StudyResults.runs) with COLUMNS; points missing a value are dropped."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)

    def column(name: str) -> pd.Series:
        return runs[name].astype(float).fillna(0.0) if name in runs else pd.Series(0.0, index=runs.index)

    own = column("train/final_tokens")
    generalist = runs["method"].eq("uniform").to_numpy()
    loss = [row.get(f"test/{row['task']}/loss", np.nan) for _, row in runs.iterrows()]
    frame = pd.DataFrame({"task": runs["task"], "seed": runs.get("seed", 0), "point": runs["point"],
                          "N": runs.get("model/non_embedding_params", np.nan), "D": column("base/tokens") + np.where(generalist, own, 0.0),
                          "Dp": np.where(generalist, 0.0, own), "loss": loss})
    return frame.dropna(subset=["N", "loss"]).reset_index(drop=True)
