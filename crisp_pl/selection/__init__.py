"""Selection methods: each turns the pool (and the specialist set) into weighted groups of windows.

One module per method registers itself (registry.py) with `select(ctx: SelectionContext) -> Groups`:
uniform.py, specialist.py, crisp.py (clustered importance sampling), doge.py (proxy-model cluster
reweighting) and the filters classifier.py, ced.py (Moore-Lewis) and dsir.py, which share
filtering.py. Importing this package registers them all.
"""

from crisp_pl.selection import ced, classifier, crisp, doge, dsir, specialist, uniform  # noqa: F401  (registers)
from crisp_pl.selection.context import SelectionContext
from crisp_pl.selection.crisp import Histogram, crisp_groups, histogram
from crisp_pl.selection.registry import Method, get_method, method_names, register, unregister

__all__ = ["Histogram", "Method", "SelectionContext", "crisp_groups", "get_method", "histogram", "method_names",
           "register", "unregister"]
