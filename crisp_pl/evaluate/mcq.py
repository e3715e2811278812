"""Local lm-eval tasks for the MCQ sets: a jsonl of questions plus a task YAML per task, offline.

lm-eval ships task YAMLs but no data, and its built-in ARC / MMLU / SciQ tasks fetch from the hub.
`write_tasks` writes, for each task name, `<folder>/<task>.jsonl` (one question per row) and
`<folder>/<task>.yaml` pointing at it through `dataset_path: json`, which lm-eval reads from disk:

    names = write_tasks({"arc_easy_test": questions}, folder)
    evaluate(CrispLM.from_gpt(gpt), names, include_path=folder)      # crisp_pl.evaluate.lm_eval_adapter
    # or: crisp lm-eval --model crisp --model_args checkpoint=PATH --tasks arc_easy_test --include_path FOLDER

The prompt is `Question.prompt()` ("Question: {question}\\nAnswer:") and each choice is scored as
" " + choice (lm-eval's default target delimiter), which is exactly `Question.train_text()` for the
correct choice, so a model pretrained on a set's train half is tested in the format it saw.
Metrics: `acc` (highest summed log-likelihood) and `acc_norm` (highest log-likelihood per byte).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import yaml

from crisp_pl.corpus.mcq import Question

TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # also a file name

HF_CACHE = ".hf_datasets_cache"
DOC_TO_TEXT = "Question: {{question}}\nAnswer:"  # must render to Question.prompt() (tests/test_mcq.py checks)


def task_yaml(task: str, data_file: Path) -> dict:
    """The lm-eval task config of one task whose questions are in the jsonl `data_file`."""
    return {
        "task": task,
        "dataset_path": "json",
        # datasets' own cache goes beside the tasks, not into ~/.cache/huggingface
        "dataset_kwargs": {"data_files": {"test": str(Path(data_file).resolve())},
                           "cache_dir": str(Path(data_file).resolve().parent / HF_CACHE)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def write_tasks(questions_by_task: dict[str, list[Question]], folder: str | Path) -> list[str]:
    """Write `<task>.jsonl` and `<task>.yaml` for each task into `folder`; return the task names.

    Each file is written to a temporary name and renamed into place, so a reader never sees half a
    file. Load them with `lm_eval.tasks.TaskManager(include_path=folder)`.
    """
    folder = Path(folder)
    for task, questions in questions_by_task.items():
        if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
            raise ValueError(f"task name {task!r}: use letters, digits, `_`, `.` and `-` only")
        if not questions:
            raise ValueError(f"task {task!r}: no questions")
    folder.mkdir(parents=True, exist_ok=True)
    for task, questions in questions_by_task.items():
        data_file = folder / f"{task}.jsonl"
        rows = (json.dumps({"question": q.question, "choices": list(q.choices), "answer": q.answer,
                            "id": q.doc_id, "subject": q.subject}, ensure_ascii=False) for q in questions)
        _write_atomic(data_file, "".join(row + "\n" for row in rows))
        _write_atomic(folder / f"{task}.yaml", yaml.safe_dump(task_yaml(task, data_file), sort_keys=False, allow_unicode=True))
    return list(questions_by_task)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are plain data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
