"""Specialist-only training: the specialist train windows in use, repeated as often as the token budget
asks. One group, drawn uniformly; a multitask gets one group per component, drawn in the task's
mixture weights (`task.weights`, equal by default) rather than in proportion to each task's size."""

from __future__ import annotations

import numpy as np

from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.registry import mixture_settings, register


@register("specialist", settings=mixture_settings)
def select(ctx: SelectionContext) -> Groups:
    """The specialist train windows only (its members index the task's train store)."""
    task, indices = ctx.cfg.task, ctx.specialist_indices
    if not task.components:
        return Groups.of("train", indices)
    component = task.component_index(ctx.specialist.sources, ctx.specialist.domains)  # a window's first document's
    weights = task.mixture_weights() * (np.bincount(component, minlength=len(task.components)) > 0)
    groups = Groups.from_labels("train", component, weights / weights.sum(),
                                {"components": len(task.components)})
    groups.members = indices[groups.members]
    return groups
