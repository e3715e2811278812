"""Progress bars for the long steps (windows, embedding, k-means, scoring, evaluation).

tqdm redraws ten times a second; a terminal overwrites each redraw, but a log file (a batch job,
`nohup`, CI) keeps them all. There the bar redraws every 30 s, and at the end. (Training has its own
bar: crisp_pl/training/progress.py.)
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_FILE_INTERVAL_S = 30.0


def bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)`, redrawn every 30 s where stderr is not a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL_S)
    return tqdm(iterable, **kwargs)
