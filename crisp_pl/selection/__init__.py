"""Selection methods: each turns the pool (and the specialist set) into weighted groups of windows.

`stage.py` dispatches on `selection.method` and caches the result; one module per method:
crisp.py (clustered importance sampling), doge.py (proxy-model cluster reweighting), and the
filters classifier.py, ced.py (Moore-Lewis) and dsir.py, which share filtering.py.
"""

from crisp_pl.selection.crisp import Histogram, crisp_groups, histogram
from crisp_pl.selection.groups import Groups

__all__ = ["Groups", "Histogram", "crisp_groups", "histogram"]
