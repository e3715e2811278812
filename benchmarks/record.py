"""Where benchmark figures go: one JSON line per figure in benchmarks/results/NAME.jsonl, each with the
machine, the library versions, the date and the git revision, so a figure can be traced and compared.

    python benchmarks/record.py            # the latest figures of every benchmark, as the README's tables

Benchmarks call `record(name, row)` for each figure they print; rows of one invocation share a `run` id.
`CRISP_BENCH_RESULTS=DIR` writes (and reads) DIR/NAME.jsonl instead: the GPU check's CPU test keeps its
toy figures out of this folder.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import uuid
from functools import cache
from importlib import metadata
from pathlib import Path

RESULTS = Path(os.environ.get("CRISP_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
PACKAGES = ("torch", "lightning", "faiss-cpu", "faiss-gpu-cu12", "sentence-transformers", "transformers", "numpy",
            "mlflow", "mlflow-skinny")  # faiss-gpu-cu12: the gpu extra; mlflow-skinny: the GPU pack's


@cache
def environment() -> dict:
    """The machine, versions and revision of this process (computed once; `run` tells invocations apart)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        except OSError:  # no git on this machine
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    gpu = None
    if "torch" in versions:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"run": uuid.uuid4().hex[:8], "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": gpu or f"cpu x{os.cpu_count()} ({platform.processor() or platform.machine()})",
            "python": platform.python_version(), **versions,
            # a copy of the working tree (the GPU machine's) has no .git: the revision comes from the environment
            "git": git("rev-parse", "--short", "HEAD") or os.environ.get("CRISP_GIT_REVISION", ""),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def record(name: str, row: dict) -> dict:
    """Append `row` with the environment to results/NAME.jsonl (one line, appended whole) and print it."""
    line = {**environment(), **row}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")
    print(json.dumps(row), flush=True)
    return line


def latest(name: str) -> list[dict]:
    """The rows of the latest run of benchmark `name` per device and command line."""
    path = RESULTS / f"{name}.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last = {}
    for row in rows:
        last[row["device"], row.get("command", "")] = row["run"]
    return [row for row in rows if last[row["device"], row.get("command", "")] == row["run"]]


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table of `columns` (missing values blank)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# per benchmark: the columns the README shows
COLUMNS = {
    "train_throughput": ["device", "size", "impl", "batch", "seq_len", "tokens_per_s", "ratio", "mfu", "data_share", "date", "git"],
    "cluster_scale": ["device", "figure", "backend", "fit", "n", "levels", "clusters", "seconds", "peak_rss_gb", "ratio", "date", "git"],
    "embed_throughput": ["device", "figure", "n", "batch_size", "windows_per_s", "ratio", "date", "git"],
    "quickstart_e2e": ["device", "figure", "tiny", "method", "ppl", "point_seconds", "seconds", "points", "date", "git"],
    "gpu_check": ["device", "part", "status", "seconds", "figures", "date", "git"],
}


def main() -> None:
    for name, columns in COLUMNS.items():
        rows = latest(name)
        if rows:
            print(f"### {name}\n\n{table(rows, columns)}\n")


if __name__ == "__main__":
    main()
