"""Selection methods: each turns the pool (and the specialist set) into weighted groups of windows.

    uniform     one group: the whole generalist pool (generalist pretraining)
    specialist  one group: the specialist train windows (specialist-only training, with repetition)
    crisp       one group per cluster, weighted by the specialist histogram P(c|Ds)
"""

from crisp_pl.selection.crisp import Histogram, crisp_groups, histogram
from crisp_pl.selection.groups import Groups

__all__ = ["Groups", "Histogram", "crisp_groups", "histogram"]
