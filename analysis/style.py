"""One colour per method across every figure, so a method reads the same in the bars, the curves and
the sweeps of every study. Fine-tuned variants ("+FT") take a darker shade of their method's colour.
Groups of a method not listed here fall back on matplotlib's cycle."""

from __future__ import annotations

from collections import Counter

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
    """The colour of each group in `names`, from its first run's `method` and `finetune` columns. Several
    groups of one method (a swept value: 150, 300, 600 steps) take tints of its colour, lightest first
    and the method's own colour last, so a figure still reads by method and the groups stay apart."""
    first = runs.drop_duplicates("group").set_index("group")
    kinds = [(first.at[n, "method"] if "method" in first else None, bool(first.at[n, "finetune"]) if "finetune" in first else False)
             for n in names]
    distinct, seen = list(dict.fromkeys(kinds)), Counter()
    colors = []
    for method, finetuned in kinds:
        base = method_color(method, finetuned, distinct.index((method, finetuned)))
        n, i = kinds.count((method, finetuned)), seen[(method, finetuned)]
        seen[(method, finetuned)] += 1
        colors.append(base if n == 1 else _tint(base, 0.6 * (n - 1 - i) / (n - 1)))
    return colors


def _tint(color: str, white: float) -> str:
    """`color` mixed with `white` parts of white (0: the colour itself)."""
    return mcolors.to_hex(tuple(c + (1.0 - c) * white for c in mcolors.to_rgb(color)))
