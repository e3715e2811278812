"""The generalist baseline: one group holding the whole pool, sampled uniformly."""

from __future__ import annotations

from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.registry import register


@register("uniform", targeted=False)
def select(ctx: SelectionContext) -> Groups:
    """Every pool window, uniformly (generalist pretraining)."""
    return Groups.single("pool", len(ctx.pool))
