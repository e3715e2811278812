"""One colour per method across every figure, so a method reads the same in the bars, the curves and
the sweeps of every study. Fine-tuned variants ("+FT") take a darker shade of their method's colour.
Groups of a method not listed here fall back on matplotlib's cycle."""

from __future__ import annotations

import matplotlib.colors as mcolors

METHOD_COLORS = {
    "uniform": "#7f7f7f",      # the generalist: grey, the baseline everything is read against
    "specialist": "#9467bd",
    "crisp": "#1f77b4",
    "crisp_auto": "#17becf",
    "ced": "#ff7f0e",
    "classifier": "#2ca02c",
    "dsir": "#d62728",
    "doge": "#8c564b",
}


def method_color(method: str, finetuned: bool = False, fallback: int = 0) -> str:
    """The colour of `method` (a darker shade once fine-tuned); `fallback` indexes matplotlib's cycle."""
    base = METHOD_COLORS.get(str(method))
    if base is None:
        return f"C{fallback % 10}"
    if not finetuned:
        return base
    r, g, b = mcolors.to_rgb(base)
    return mcolors.to_hex((r * 0.55, g * 0.55, b * 0.55))


def group_colors(runs, names: list[str]) -> list[str]:
    """The colour of each group in `names`, from its first run's `method` and `finetune` columns. Two
    groups of one method (a swept value) keep matplotlib's cycle, so they stay apart."""
    first = runs.drop_duplicates("group").set_index("group")
    kinds = [(first.at[n, "method"] if "method" in first else None, bool(first.at[n, "finetune"]) if "finetune" in first else False)
             for n in names]
    if len(set(kinds)) < len(kinds):
        return [f"C{k % 10}" for k in range(len(names))]
    return [method_color(m, ft, k) for k, (m, ft) in enumerate(kinds)]
