"""A stand-in for a lent GPU machine's Python, for tests: a virtual environment that can import only the
distributions that machine has (scripts/gpu_pack.py's GPU_MACHINE) and the ones
the GPU pack carries (gpu_pack.carried()), each linked from this interpreter's site-packages.
A module the check imports that neither holds fails here as it would there.

This machine's versions are newer than the GPU machine's in places, and some newer versions need
packages the GPU machine's do not (huggingface-hub's httpx2, transformers' kernels): what the listed
distributions need here is linked too, except the needs of the pack's own wheels, which the pack must carry.
"""

from __future__ import annotations

import sys
import venv
from collections import Counter
from importlib import metadata
from pathlib import Path

from scripts.gpu_pack import GPU_MACHINE, installed, normalized, requirements_closure


def _top_levels(dist: metadata.Distribution) -> set[str]:
    return {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}


def machine_python(folder: Path, pack: tuple[str, ...]) -> Path:
    """A venv at `folder` seeing GPU_MACHINE, what those need here, and the `pack` distributions; its python."""
    dists = installed()
    pack_names = {normalized(n) for n in pack}
    missing = pack_names - dists.keys()
    if missing:
        raise RuntimeError(f"the pack's {sorted(missing)} are not installed here: nothing to link")
    allowed = GPU_MACHINE | (requirements_closure(set(GPU_MACHINE), dists) - requirements_closure(pack_names, dists)) | pack_names
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(folder)
    site = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    # a folder several distributions share (a namespace package: opentelemetry, nvidia) is linked file by file
    shared = Counter(top for dist in dists.values() for top in _top_levels(dist))
    for name in sorted(allowed & dists.keys()):
        dist = dists[name]
        base = Path(dist.locate_file(""))
        for top in _top_levels(dist):
            if shared[top] == 1:
                if (base / top).exists() and not (site / top).exists():
                    (site / top).symlink_to(base / top)
                continue
            for file in dist.files:
                parts = Path(file).parts
                if parts[0] == top and "__pycache__" not in parts and (base / file).exists() and not (site / file).exists():
                    (site / file).parent.mkdir(parents=True, exist_ok=True)
                    (site / file).symlink_to(base / file)
    return folder / "bin" / "python"
