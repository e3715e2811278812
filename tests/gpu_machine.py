"""A stand-in for a lent GPU machine's Python, for tests: a virtual environment that can import only the
distributions that machine has (GPU_MACHINE, as the device notes listed them on 2026-11-17) and the ones
the GPU pack carries (scripts/gpu_pack.py's WHEELS), each linked from this interpreter's site-packages.
A module the check imports that neither holds fails here as it would there.

This machine's versions are newer than the GPU machine's in places, and some newer versions need
packages the GPU machine's do not (huggingface-hub's httpx2, transformers' kernels): what the listed
distributions need here is linked too, except the needs of the pack's own wheels, which the pack must carry.
"""

from __future__ import annotations

import re
import sys
import venv
from collections import Counter
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

GPU_MACHINE = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, metadata.Distribution]:
    return {normalized(d.metadata["Name"]): d for d in metadata.distributions()}


def _needs(names: set[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """`names` and everything they require here, recursively (installed requirements, no extras)."""
    seen, todo = set(), [n for n in names if n in installed]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in installed[name].requires or []:
            req = Requirement(line)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and normalized(req.name) in installed:
                todo.append(normalized(req.name))
    return seen


def _top_levels(dist: metadata.Distribution) -> set[str]:
    return {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}


def machine_python(folder: Path, pack: tuple[str, ...]) -> Path:
    """A venv at `folder` seeing GPU_MACHINE, what those need here, and the `pack` distributions; its python."""
    installed = _installed()
    pack_names = {normalized(n) for n in pack}
    missing = pack_names - installed.keys()
    if missing:
        raise RuntimeError(f"the pack's {sorted(missing)} are not installed here: nothing to link")
    allowed = GPU_MACHINE | (_needs(set(GPU_MACHINE), installed) - _needs(pack_names, installed)) | pack_names
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(folder)
    site = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    # a folder several distributions share (a namespace package: opentelemetry, nvidia) is linked file by file
    shared = Counter(top for dist in installed.values() for top in _top_levels(dist))
    for name in sorted(allowed & installed.keys()):
        dist = installed[name]
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
