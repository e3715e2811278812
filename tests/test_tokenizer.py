"""The tokenizer as a config choice: the byte-level BPE trained on the pool (exact, deterministic), its
cached stage and the window keys it moves, windows written with it, and a checkpoint that carries it
through training, the eval stage's unigram baseline and lm-eval scoring."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crisp_pl.cache import StageCache
from crisp_pl.config import ConfigError, build_run_config
from crisp_pl.corpus.documents import Document
from crisp_pl.corpus.tokenizer import (EOS_TEXT, BPETokenizer, gpt2_tokenizer, load_tokenizer, tokenizer_from_spec,
                                       train_bpe)
from crisp_pl.corpus.windows import WindowStore, build_windows
from crisp_pl.evaluate.perplexity import unigram_counts, unigram_perplexity

STDLIB_MODULES = ("json.decoder", "json.encoder", "textwrap", "string", "fractions", "calendar")
TRICKY = [
    "",
    "CRISP re-weights clusters:\n\tnaïve 東京 ünïcödé — 12,345.6 tokens!",
    "  leading and trailing spaces  \n\n\n",
    "emoji 🧬🩺 and a lone combining mark e\u0301 and NUL \x00 and CRLF\r\n",
    f"a literal {EOS_TEXT} inside a document is text",
    "ZWJ family 👩‍👩‍👧 · right-to-left عربى · math ∑∫√",
]


def stdlib_texts() -> list[str]:
    """Real text every process can read: a few standard library sources."""
    import importlib

    return [Path(importlib.import_module(name).__file__).read_text(encoding="utf-8") for name in STDLIB_MODULES]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_bpe(stdlib_texts(), 600)


# --- the tokenizer ------------------------------------------------------------------------------


def test_bpe_round_trips_any_text_exactly(bpe):
    assert bpe.vocab_size == 600 and bpe.eos_id == 0 and bpe.name.startswith("bpe600-")
    texts = stdlib_texts() + TRICKY
    ids = bpe.encode_batch(texts)
    assert [bpe.decode(i) for i in ids] == texts and bpe.decode_batch(ids) == texts
    assert all(0 < t < bpe.vocab_size for row in ids for t in row)  # the EOS never comes from a text
    assert max(map(len, ids[:len(STDLIB_MODULES)])) < max(map(len, map(str.encode, stdlib_texts()))) / 2  # it merges
    # a literal "<|endoftext|>" is text in windows, the EOS id where lm-eval asks for specials
    assert bpe.encode(f"a{EOS_TEXT}b", allow_special=True) == bpe.encode("a") + [bpe.eos_id] + bpe.encode("b")
    assert bpe.eos_id not in bpe.encode(f"a{EOS_TEXT}b") and bpe.decode([bpe.eos_id]) == EOS_TEXT
    assert bpe.decode(bpe.encode("東")[:1]) == "\ufffd"  # a cut character reads as U+FFFD, as GPT-2's does
    # the spec rebuilds the same tokenizer
    again = tokenizer_from_spec(json.loads(json.dumps(bpe.spec())))
    assert again.name == bpe.name and again.encode_batch(texts) == ids
    pickled = pickle.loads(pickle.dumps(bpe))  # as a DataLoader worker or a process pool gets it
    assert pickled.encode_batch(texts) == ids and bpe.eos_id not in pickled.encode(f"a{EOS_TEXT}b")


def test_bpe_training_is_deterministic_also_in_a_fresh_process(bpe):
    assert train_bpe(stdlib_texts(), 600).spec() == bpe.spec()
    script = ("import hashlib, json, sys; sys.path.insert(0, 'tests'); from test_tokenizer import stdlib_texts; "
              "from crisp_pl.corpus.tokenizer import train_bpe; "
              "print(hashlib.sha256(json.dumps(train_bpe(stdlib_texts(), 600).spec()).encode()).hexdigest())")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == hashlib.sha256(json.dumps(bpe.spec()).encode()).hexdigest()
    assert train_bpe(stdlib_texts(), 500).spec() != bpe.spec()


def test_gpt2_tokenizer_keeps_gpt2s_ids():
    gpt2 = gpt2_tokenizer()
    assert gpt2 is gpt2_tokenizer() and gpt2.spec() == {"kind": "gpt2"} and tokenizer_from_spec({"kind": "gpt2"}) is gpt2
    assert gpt2.encode("Hello world") == [15496, 995] and gpt2.encode(EOS_TEXT, allow_special=True) == [50256]
    assert gpt2.vocab_size == 50257 and gpt2.eos_id == 50256 and gpt2.decode(gpt2.encode(TRICKY[1])) == TRICKY[1]


def test_tokenizer_config_is_checked():
    with pytest.raises(ConfigError, match="corpus.tokenizer must be `gpt2` or `bpe`"):
        build_run_config({"corpus": {"tokenizer": "sentencepiece"}})
    with pytest.raises(ConfigError, match="corpus.bpe_vocab_size must be in"):
        build_run_config({"corpus": {"tokenizer": "bpe", "bpe_vocab_size": 70000}})


# --- windows --------------------------------------------------------------------------------------


def test_windows_written_with_bpe_decode_back_to_the_documents(bpe, tmp_path):
    texts = [t for t in stdlib_texts() + TRICKY if t]
    docs = [Document(text, "s", "d", f"s:{i}") for i, text in enumerate(texts)]
    store = build_windows(docs, tmp_path / "store", 32, shard_windows=7, tokenizer=bpe, progress=False)
    ids = bpe.encode_batch(texts)
    stream = [t for i, row in enumerate(ids) for t in ([bpe.eos_id] if i else []) + row]
    n = len(stream) // 32
    assert len(store) == n and store.meta["tokenizer"] == bpe.name and store.meta["vocab_size"] == 600
    np.testing.assert_array_equal(store.tokens(range(n)).ravel(), stream[: n * 32])
    assert store.doc_table["n_tokens"].tolist() == [len(row) for row in ids]
    # the whole token stream decodes back to the documents joined by EOS (the dropped tail aside)
    joined = EOS_TEXT.join(texts)
    decoded = bpe.decode(store.tokens(range(n)).ravel().tolist())
    assert joined.startswith(decoded.removesuffix("\ufffd")) and len(decoded) > len(joined) - 64
    # a store reopened from its folder alone decodes with its own tokenizer; EOS reads as a blank line
    reopened = WindowStore(tmp_path / "store")
    assert reopened.tokenizer.spec() == bpe.spec() and reopened.vocab_size == 600
    first = [i for i in range(n) if bpe.eos_id in store.tokens([i])[0]][0]
    row = store.tokens([first])[0].tolist()
    cut = row.index(bpe.eos_id)
    blank = bpe.decode(row[:cut]) + "\n\n" + bpe.decode(row[cut + 1:])
    assert reopened.texts([first]) == [blank] == store.subset(np.array([first])).texts([0])


# --- the stage and the keys it moves -------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_config(tmp_path_factory):
    """The shared tiny dataset with a 512-id BPE, as an MCQ task (ARC-Challenge) so that the eval stage
    also scores questions through lm-eval."""
    from conftest import TINY_DATA

    return build_run_config(TINY_DATA, {"task": "arc_challenge", "results_dir": str(tmp_path_factory.mktemp("bpe"))},
                            {"corpus": {"tokenizer": "bpe", "bpe_vocab_size": 512}, "selection": {"method": "uniform"},
                             "train": {"max_steps": 6}, "eval": {"max_questions": 24}})


def with_set(cfg, **corpus):
    from crisp_pl.config import to_dict

    return build_run_config(to_dict(cfg), {"corpus": corpus})


def test_tokenizer_stage_is_cached_and_its_key_moves_the_window_stages(bpe_config):
    from crisp_pl.stages.data import pool_stage, task_stage, tokenizer_stage

    cfg = bpe_config
    cache = StageCache(f"{cfg.results_dir}/cache")
    entry = tokenizer_stage(cache, cfg)
    stamp = (entry.path / "tokenizer.json").stat().st_mtime_ns
    assert tokenizer_stage(cache, cfg) == entry and (entry.path / "tokenizer.json").stat().st_mtime_ns == stamp  # cached
    tokenizer = load_tokenizer(entry.path / "tokenizer.json")
    assert tokenizer.vocab_size == 512 and json.loads((entry.path / "info.json").read_text())["name"] == tokenizer.name
    # what chooses the pool's documents and the BPE's size move its key; windows and training do not
    assert tokenizer_stage(cache, with_set(cfg, window_length=32)).key == entry.key
    smaller = tokenizer_stage(cache, with_set(cfg, bpe_vocab_size=384))
    assert smaller.key != entry.key and load_tokenizer(smaller.path / "tokenizer.json").vocab_size == 384
    gpt2 = tokenizer_stage(cache, with_set(cfg, tokenizer="gpt2"))
    assert gpt2.key not in (entry.key, smaller.key) and load_tokenizer(gpt2.path / "tokenizer.json") is gpt2_tokenizer()
    assert tokenizer_stage(cache, with_set(with_set(cfg, tokenizer="gpt2"), max_chars_per_doc=100)).key == gpt2.key

    pool, task = pool_stage(cache, cfg, entry), task_stage(cache, cfg, entry)
    assert pool_stage(cache, cfg) == pool  # the tokenizer stage runs (cached) when not given
    assert json.loads((entry.path / "inputs.json").read_text())["tokenizer"] == "bpe"
    assert json.loads((pool.path / "inputs.json").read_text())["tokenizer"] == entry.key
    assert WindowStore(pool.path / "pool").tokenizer.spec() == tokenizer.spec() == WindowStore(task.path / "test").tokenizer.spec()
    assert pool_stage(cache, cfg, smaller).key != pool.key and task_stage(cache, cfg, smaller).key != task.key


# --- a micro training run through the real stages ------------------------------------------------


@pytest.fixture(scope="module")
def bpe_run(bpe_config):
    from crisp_pl.stages import eval_stage, prepare, selection_stage, train_stage

    cfg = bpe_config
    cache = StageCache(f"{cfg.results_dir}/cache")
    prepared = prepare(cache, cfg)
    model = train_stage(cache, cfg, prepared, selection_stage(cache, cfg, prepared))
    metrics = json.loads((eval_stage(cache, cfg, prepared, model).path / "metrics.json").read_text())
    return prepared, model.path / "final.ckpt", metrics


def test_micro_training_with_bpe_gives_a_perplexity_and_the_unigram_baseline(bpe_run):
    from crisp_pl.model.checkpoint import load_gpt, load_tokenizer as checkpoint_tokenizer

    prepared, checkpoint, metrics = bpe_run
    assert prepared.tokenizer.vocab_size == 512 and prepared.keys["tokenizer"]
    gpt = load_gpt(checkpoint)
    assert gpt.config.vocab_size == 512  # the output layer follows the tokenizer (already a multiple of 64)
    assert checkpoint_tokenizer(checkpoint).spec() == prepared.tokenizer.spec()  # the checkpoint carries it
    assert math.isfinite(metrics["arc_challenge/ppl"]) and 1 < metrics["arc_challenge/ppl"] < 512 * 4
    assert math.isfinite(metrics["arc_challenge/unigram_ppl"]) and 1 < metrics["arc_challenge/unigram_ppl"] < 512
    assert metrics["arc_challenge/n"] == 24 and 0 <= metrics["arc_challenge/acc"] <= 1


def test_unigram_baseline_is_the_pools_smoothed_frequencies_on_the_predicted_positions(bpe_run):
    prepared, _, _ = bpe_run
    pool, test = prepared.stores.pool, prepared.stores.test
    counts = unigram_counts(pool, 512, chunk_windows=5)
    everything = pool.tokens(range(len(pool)))
    np.testing.assert_array_equal(counts, np.bincount(everything.ravel(), minlength=512))
    targets = test.tokens(range(7))[:, 1:]
    p = (counts[targets] + 1) / (counts.sum() + 512)
    result = unigram_perplexity(counts, test, max_windows=7)
    assert result["tokens"] == targets.size and result["windows"] == 7
    assert result["ppl"] == pytest.approx(math.exp(-np.log(p).mean()), rel=1e-12)


def test_lm_eval_rebuilds_the_tokenizer_from_the_checkpoint_alone(bpe_run, tmp_path):
    from crisp_pl.corpus.mcq import load_questions
    from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate, main
    from crisp_pl.evaluate.mcq import write_tasks
    from crisp_pl.model.checkpoint import load_gpt

    prepared, checkpoint, _ = bpe_run
    lm = CrispLM(checkpoint=str(checkpoint), batch_size=4)
    assert lm.model.tokenizer.spec() == prepared.tokenizer.spec() and lm.eot_token_id == prepared.tokenizer.eos_id
    # its scores are the GPT's own token losses on the BPE ids
    gpt = load_gpt(checkpoint)
    context, continuation = "Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"
    ids = prepared.tokenizer.encode(context + continuation)
    n = len(prepared.tokenizer.encode(continuation))
    [(logprob, _)] = lm.loglikelihood([_request(context, continuation)], disable_tqdm=True)
    with torch.no_grad():
        nll = gpt.token_losses(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))[0, -n:].sum()
    assert logprob == pytest.approx(-float(nll), rel=1e-4)
    with pytest.raises(ValueError, match="not the tokenizer it was trained with"):
        CrispLM.from_gpt(gpt)  # GPT-2's 50,257 ids do not fit a 512-way output

    # the shell command (`crisp lm-eval`) knows only the checkpoint's path
    write_tasks({"sciq_head": load_questions("sciq")[:12]}, tmp_path / "tasks")
    code = main(["--model", "crisp", "--model_args", f"checkpoint={checkpoint},batch_size=4", "--tasks", "sciq_head",
                 "--include_path", str(tmp_path / "tasks"), "--device", "cpu", "--output_path", str(tmp_path / "out")])
    assert code == 0
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    in_process = evaluate(CrispLM.from_gpt(gpt, tokenizer=prepared.tokenizer), ["sciq_head"], include_path=tmp_path / "tasks")
    assert results["results"]["sciq_head"]["acc,none"] == pytest.approx(in_process["sciq_head"]["acc"], abs=1e-9)


def _request(context: str, continuation: str):
    from lm_eval.api.instance import Instance

    return Instance("loglikelihood", {}, (context, continuation), 0)
