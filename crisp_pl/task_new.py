"""`crisp task new NAME --from PATH`: a task preset (and a study) from a user's own files, in one step.

The files become the task's own source (`task.extra_sources`: read for the task only, never part of
the generalist pool), split by document into train / validation / test (0.5 / 0.1 / 0.4: a user's
domain is small, and most of it is worth testing on). The kind is read from the path (a folder or
glob of .txt files: `text`, one document a file; .jsonl / .jsonl.gz / .jsonl.zst: `jsonl`;
.parquet: `parquet`) unless given. The source is read once before anything is written, so a bad
file fails here, naming it, and the preset states how many documents it holds.

Both go into the workspace (crisp_pl.workspace: `crisp init` makes one), never into the tool's own
folders: with none, the command refuses and says how to make one.

With `--study`, studies/NAME.yaml runs the task against the generalist (uniform), specialist-only,
CRISP and CRISP+FT over three seeds at every scale (tiny: the built-in tiny pool); its CRISP is capped at
4 expected draws of a pool window at the point's budget (`selection.crisp.max_repeats`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from crisp_pl import workspace
from crisp_pl.config import ConfigError, SourceConfig
from crisp_pl.corpus.readers import read_source

FRACTIONS = {"train_fraction": 0.5, "validation_fraction": 0.1, "test_fraction": 0.4}
CRISP_MAX_REPEATS = 4  # README "CRISP planned against its budget"


def guess_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir() or name.endswith(".txt") or "*" in name and ".txt" in name:
        return "text"
    if any(name.endswith(suffix) for suffix in (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise ConfigError(f"{path}: cannot tell the kind of these files; pass --kind text|jsonl|parquet")


def new_task(name: str, source: str, kind: str | None = None, text_field: str = "text", id_field: str | None = None,
             study: bool = False, force: bool = False, folder: Path | None = None) -> list[Path]:
    """Write configs/tasks/NAME.yaml (and studies/NAME.yaml) into the workspace `folder` (default: the
    active one, crisp_pl.workspace.required); returns the files written."""
    if not name.isidentifier():
        raise ConfigError(f"task name {name!r}: use letters, digits and underscores (it names metrics: test/NAME/ppl)")
    folder = folder or workspace.required()  # before reading anything: where the files would go
    path = Path(source).expanduser().resolve()
    kind = kind or guess_kind(path)
    pattern = str(path)  # a folder stands for the files of its kind under it
    spec = SourceConfig(name=name, kind=kind, path=pattern, text_field=text_field, id_field=id_field)
    documents = sum(1 for _ in read_source(spec))  # a bad file fails now, naming itself
    if documents < 10:
        raise ConfigError(f"{pattern}: {documents} documents; a task needs at least 10 to split into train, validation and test")
    written = []
    outputs = [(folder / "configs" / "tasks" / f"{name}.yaml", _preset(name, spec, documents, source))]
    if study:
        outputs.append((folder / "studies" / f"{name}.yaml", _study(name)))
    for out, text in outputs:
        if out.exists() and not force:
            raise ConfigError(f"{out} exists; pass --force to replace it")
    for out, text in outputs:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(out)
        written.append(out)
    return written


def _preset(name: str, spec: SourceConfig, documents: int, source: str) -> str:
    extra = {k: v for k, v in vars(spec).items() if v is not None and not (k == "text_field" and v == "text")}
    task = {"name": name, "sources": [name], "extra_sources": [extra], "split": "fractions", **FRACTIONS}
    header = (f"# {name}: {documents} documents from {source}, written by `crisp task new`; edit freely.\n"
              f"# Split by document: {FRACTIONS['train_fraction']:.0%} train (what CRISP's histogram and fine-tuning see),\n"
              f"# {FRACTIONS['validation_fraction']:.0%} validation, {FRACTIONS['test_fraction']:.0%} test. "
              f"The files never join the generalist pool.\n")
    return header + yaml.safe_dump({"task": task}, sort_keys=False)


def _study(name: str) -> str:
    study = {
        "name": name,
        "description": f"Does CRISP help on {name}? The generalist (uniform over the pool), specialist-only, CRISP "
                       f"and CRISP then fine-tuned, same training tokens, three seeds; held-out test perplexity on "
                       f"{name}'s own documents. The paper's finding: CRISP beats the generalist, and CRISP+FT beats "
                       f"generalist+FT, when the pool holds text near the domain.",
        "config": {"task": name},
        "scales": {"tiny": {"include": ["corpora/builtin_tiny.yaml"],
                            "finetune": {"max_steps": 60, "lr": 5.0e-4, "warmup_steps": 0, "val_every": 10, "patience": 2}}},
        # CRISP planned against its budget (at most 4 expected draws of a pool window): the default for new
        # studies since the clusters study measured it never worse than CRISP and far better where CRISP repeats
        "variants": {"uniform": {"selection.method": "uniform"}, "specialist": {"selection.method": "specialist"},
                     "crisp": {"selection.method": "crisp", "selection.crisp.max_repeats": CRISP_MAX_REPEATS},
                     "crisp+ft": {"selection.method": "crisp", "selection.crisp.max_repeats": CRISP_MAX_REPEATS,
                                  "finetune.enabled": True}},
        "seeds": [0, 1, 2],
    }
    return yaml.safe_dump(study, sort_keys=False, width=110)
