"""The evaluation stage: perplexity on the held-out specialist test windows, and multiple-choice
accuracy through lm-eval on the test-half questions of any MCQ set among the test documents.
Its `metrics.json` holds `TASK/{loss,ppl,tokens,windows}`, `TASK/unigram_ppl` (the same windows under the
pool's add-one smoothed token frequencies: the baseline to beat) and `SET/{acc,acc_norm,...}`; a multitask
also `TASK/COMPONENT/...` for each of its components; and every `eval.tasks` preset's metrics under its
own name (the transfer study scores every model on every task)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crisp_pl import seeds
from crisp_pl.cache import CacheEntry, StageCache
from crisp_pl.config import RunConfig, build_run_config, to_dict
from crisp_pl.corpus.mcq import MCQ_SETS, load_questions
from crisp_pl.corpus.windows import WindowStore
from crisp_pl.evaluate.mcq import write_tasks
from crisp_pl.evaluate.perplexity import perplexity, unigram_counts, unigram_perplexity
from crisp_pl.evaluate.sample import stratified_sample
from crisp_pl.model.checkpoint import load_gpt, load_tokenizer
from crisp_pl.stages.data import Prepared, heldout_windows, task_stage, tokenizer_stage


def eval_stage(cache: StageCache, cfg: RunConfig, prepared: Prepared, model: CacheEntry) -> CacheEntry:
    others = other_tasks(cache, cfg)
    inputs = {"model": model.key, "task": prepared.keys["task"], "max_windows": cfg.eval.max_windows,
              "max_questions": cfg.eval.max_questions, "sample": "stratified", "unigram_pool": prepared.keys["pool"]}
    if others:
        inputs["other_tasks"] = {other.task.name: entry.key for other, entry in others}

    def build(out: Path) -> None:
        gpt = load_gpt(model.path / "final.ckpt")
        tokenizer = load_tokenizer(model.path / "final.ckpt")  # the run's: the pool's and the checkpoint's
        counts = unigram_counts(prepared.stores.pool, tokenizer.vocab_size)
        metrics = score_task(gpt, cfg, prepared.stores.test, counts, tokenizer, out / "lm_eval", out / "eval_windows.npy")
        for other, entry in others:
            test = WindowStore(entry.path / "test", prepared.tokenizer)
            scored = score_task(gpt, other, test, counts, tokenizer, out / f"lm_eval-{other.task.name}",
                                out / f"eval_windows-{other.task.name}.npy")
            metrics.update({k: v for k, v in scored.items() if k not in metrics})  # a shared MCQ set is scored once
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    return cache.run("eval", inputs, build)


def other_tasks(cache: StageCache, cfg: RunConfig) -> list[tuple[RunConfig, CacheEntry]]:
    """(config, task stage) of every `eval.tasks` preset besides the run's own, windowed with the run's tokenizer."""
    names = [name for name in cfg.eval.tasks if name != cfg.task.name]
    if not names:
        return []
    tokenizer = tokenizer_stage(cache, cfg)
    return [(other, task_stage(cache, other, tokenizer)) for other in
            (build_run_config(to_dict(cfg), {"task": name}) for name in names)]


def score_task(gpt, cfg: RunConfig, test, counts: np.ndarray, tokenizer, folder: Path, windows_file: Path) -> dict[str, float]:
    """`cfg.task`'s metrics on its test store: perplexity and unigram perplexity (per component of a
    multitask, and pooled), and MCQ accuracy on any MCQ set among its test documents. Which test windows
    were scored goes to `windows_file` (logged with the run)."""
    windows = heldout_windows(test, cfg.eval.max_windows, cfg.task.seed, "eval.test_windows")
    np.save(windows_file, windows)
    metrics, parts = {}, test_parts(cfg, test, windows)
    for name, part in parts.items():
        scores = perplexity(gpt, test.subset(part), cfg.eval.batch_size, desc=f"test/{name}")
        scores["unigram_ppl"] = unigram_perplexity(counts, test.subset(part))["ppl"]
        metrics.update({f"{name}/{k}": v for k, v in scores.items()})
    if cfg.task.components:
        metrics.update(_pooled(cfg.task.name, metrics, parts))
    metrics.update(mcq_accuracy(gpt, test, cfg, folder, tokenizer))
    return metrics


def test_parts(cfg: RunConfig, test, windows: np.ndarray) -> dict[str, np.ndarray]:
    """Metric prefix -> the test windows it scores: `TASK`, or for a multitask one `TASK/COMPONENT`
    per component (a window counts for the component of its first document)."""
    if not cfg.task.components:
        return {cfg.task.name: windows}
    component = cfg.task.component_index(test.sources[windows], test.domains[windows])
    return {f"{cfg.task.name}/{c.name}": windows[component == i] for i, c in enumerate(cfg.task.components)
            if (component == i).any()}


def _pooled(task: str, metrics: dict, parts: dict) -> dict[str, float]:
    """A multitask's `TASK/{loss,ppl,unigram_ppl,tokens,windows}` over the union of its components'
    test windows, token-weighted as `perplexity` weighs windows."""
    tokens = {name: metrics[f"{name}/tokens"] for name in parts}
    total = sum(tokens.values())
    loss = sum(metrics[f"{name}/loss"] * n for name, n in tokens.items()) / total
    unigram = sum(np.log(metrics[f"{name}/unigram_ppl"]) * n for name, n in tokens.items()) / total
    return {f"{task}/loss": loss, f"{task}/ppl": float(np.exp(loss)), f"{task}/unigram_ppl": float(np.exp(unigram)),
            f"{task}/tokens": total, f"{task}/windows": float(sum(len(w) for w in parts.values()))}


def load_metrics(evaluation: CacheEntry) -> dict[str, float]:
    return json.loads((evaluation.path / "metrics.json").read_text())


def mcq_accuracy(gpt, test, cfg: RunConfig, folder: Path, tokenizer=None) -> dict[str, float]:
    """acc / acc_norm per MCQ set among the test documents (none for a pure language-modeling task),
    and `chance`: the mean of 1 / (number of choices) over the questions scored.

    With `eval.max_questions`, a seeded sample stratified by subject (MMLU) is scored; the ids of the
    scored questions are written to `folder/questions.json`."""
    sets = [name for name in MCQ_SETS if name in set(test.doc_table["source"])]
    if not sets:
        return {}
    from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate  # lm-eval is slow to import: only for MCQ tasks

    test_ids = set(test.doc_table["doc_id"])
    by_task = {}
    for name in sets:
        questions = [q for q in load_questions(name) if q.doc_id in test_ids]
        rng = seeds.rng(cfg.task.seed, f"eval.questions.{name}")
        picked = stratified_sample(np.array([q.subject or q.set for q in questions]), cfg.eval.max_questions, rng)
        by_task[f"{name}_test_half"] = [questions[i] for i in picked]
    write_tasks(by_task, folder)
    (folder / "questions.json").write_text(json.dumps({t: [q.doc_id for q in qs] for t, qs in by_task.items()}))
    results = evaluate(CrispLM.from_gpt(gpt, batch_size=cfg.eval.batch_size, tokenizer=tokenizer), list(by_task), include_path=folder)
    out = {f"{task.removesuffix('_test_half')}/{k}": float(v) for task, scores in results.items() for k, v in scores.items()}
    for task, questions in by_task.items():
        out[f"{task.removesuffix('_test_half')}/chance"] = float(np.mean([1 / len(q.choices) for q in questions]))
    return out
