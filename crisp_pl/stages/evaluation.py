"""The evaluation stage: perplexity on the held-out specialist test windows, and multiple-choice
accuracy through lm-eval on the test-half questions of any MCQ set among the test documents.
Its `metrics.json` holds `TASK/{loss,ppl,tokens,windows}` and `SET/{acc,acc_norm,...}`."""

from __future__ import annotations

import json
from pathlib import Path

from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import RunConfig
from crisp_pl.corpus.mcq import MCQ_SETS, load_questions
from crisp_pl.evaluate.mcq import write_tasks
from crisp_pl.evaluate.perplexity import perplexity
from crisp_pl.model.checkpoint import load_gpt
from crisp_pl.stages.data import Prepared


def eval_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, model: CacheEntry) -> CacheEntry:
    inputs = {"model": model.key, "task": prepared.keys["task"], "max_windows": cfg.eval.max_windows,
              "max_questions": cfg.eval.max_questions}

    def build(out: Path) -> None:
        gpt = load_gpt(model.path / "final.ckpt")
        test = prepared.stores.test
        metrics = {f"{cfg.task.name}/{k}": v for k, v in
                   perplexity(gpt, test, cfg.eval.batch_size, cfg.eval.max_windows, desc=f"test/{cfg.task.name}").items()}
        metrics.update(mcq_accuracy(gpt, test, cfg, out / "lm_eval"))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    return cache.run("eval", inputs, build)


def load_metrics(evaluation: CacheEntry) -> dict[str, float]:
    return json.loads((evaluation.path / "metrics.json").read_text())


def mcq_accuracy(gpt, test, cfg: RunConfig, folder: Path) -> dict[str, float]:
    """acc / acc_norm per MCQ set among the test documents (none for a pure language-modeling task)."""
    sets = [name for name in MCQ_SETS if name in set(test.doc_table["source"])]
    if not sets:
        return {}
    from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate  # lm-eval is slow to import: only for MCQ tasks

    test_ids = set(test.doc_table["doc_id"])
    by_task = {f"{name}_test_half": [q for q in load_questions(name) if q.doc_id in test_ids][: cfg.eval.max_questions] for name in sets}
    write_tasks(by_task, folder)
    results = evaluate(CrispLM.from_gpt(gpt, batch_size=cfg.eval.batch_size), list(by_task), include_path=folder)
    return {f"{task.removesuffix('_test_half')}/{k}": float(v) for task, scores in results.items() for k, v in scores.items()}
