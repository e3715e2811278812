"""Peak memory of corpus reading and window writing on large inputs, each case in a fresh process.

    one_line      one jsonl line holding a --line-mb MB document: read, then tokenized into windows (GPT-2 BPE)
    stream        a --file-mb MB jsonl of 2 kB documents, streamed by `read_source` (documents counted, none kept)
    load_corpus   the same file through `load_corpus`, which returns every document (what the data stages call)
    windows       the same file streamed into a window store (GPT-2 BPE)
    pool          the same file as the generalist pool: the pool stage's documents (`_pool_documents`) into windows

    python benchmarks/reader_memory.py                        # 50 MB line, 1 GB file
    python benchmarks/reader_memory.py --file-mb 200          # quicker

One JSON line per case: seconds, peak resident memory (ru_maxrss), the memory the case added above its
imports, and that over the input size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = r"""
import json, resource, sys, time
from pathlib import Path
from crisp_pl.config import CorpusConfig, SourceConfig
from crisp_pl.corpus.readers import read_source
from crisp_pl.corpus.tasks import load_corpus
from crisp_pl.corpus.windows import build_windows

case, path, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
source = SourceConfig(name="big", kind="jsonl", path=path)
if case == "pool":
    from crisp_pl.config import build_run_config
    from crisp_pl.stages.data import _pool_documents  # heavy imports (torch, faiss): before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if case == "stream":
    docs = sum(1 for _ in read_source(source))
elif case == "load_corpus":
    docs = len(load_corpus(CorpusConfig(sources=[source]), progress=False))
elif case == "pool":
    cfg = build_run_config({"task": "medical", "corpus": {"tokenizer": "gpt2", "sources": [{"name": "big", "kind": "jsonl", "path": path}]}})
    docs = len(build_windows(_pool_documents(cfg), out / "store", 1024, 65536, progress=False))
else:  # one_line, windows: read and write windows in one stream
    docs = len(build_windows(read_source(source), out / "store", 1024, 65536, progress=False))
print(json.dumps({"seconds": time.perf_counter() - started, "count": docs,  # ru_maxrss: KiB on Linux
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_mb": base / 1024}))
"""


def write_inputs(folder: Path, line_mb: int, file_mb: int) -> tuple[Path, Path]:
    words = "the patient presented with a cough and was treated for pneumonia before discharge ".split()
    one_line = folder / "one_line.jsonl"
    text = " ".join(words[i % len(words)] for i in range(line_mb * 1024 * 1024 // 7))
    one_line.write_text(json.dumps({"text": text}) + "\n")
    big = folder / "big.jsonl"
    doc = json.dumps({"text": " ".join(words * 26)})  # ~2 kB
    with open(big, "w") as f:
        for _ in range(file_mb * 1024 * 1024 // (len(doc) + 1)):
            f.write(doc + "\n")
    return one_line, big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--line-mb", type=int, default=50)
    parser.add_argument("--file-mb", type=int, default=1024)
    parser.add_argument("--cases", nargs="+", default=["one_line", "stream", "load_corpus", "windows", "pool"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_line, big = write_inputs(folder, args.line_mb, args.file_mb)
        for case in args.cases:
            path = one_line if case == "one_line" else big
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CASE, case, str(path), str(folder / case)], capture_output=True, text=True)
            if done.returncode:
                print(json.dumps({"case": case, "error": done.stderr[-500:]}))
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            size_mb = path.stat().st_size / 2**20
            added = row["peak_mb"] - row["imports_mb"]  # what the case itself took, above the interpreter and its imports
            print(json.dumps({"case": case, "input_mb": round(size_mb), "seconds": round(row["seconds"], 1), "count": row["count"],
                              "peak_mb": round(row["peak_mb"]), "imports_mb": round(row["imports_mb"]), "added_mb": round(added),
                              "added_over_input": round(added / size_mb, 2),
                              "wall_seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
