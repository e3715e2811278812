"""Specialist-only training: one group holding the specialist train windows in use, repeated as often as
the token budget asks."""

from __future__ import annotations

import numpy as np

from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.registry import register


@register("specialist")
def select(ctx: SelectionContext) -> Groups:
    """The specialist train windows only (its members index the task's train store)."""
    return Groups("train", np.array([0, len(ctx.specialist_indices)]), ctx.specialist_indices, np.array([1.0]))
