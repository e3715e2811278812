"""`crisp export`: a checkpoint as a Hugging Face GPT2LMHeadModel folder computes what the GPT computes.

Micro GPTs trained a few real steps on ARC-Easy text, one per tokenizer kind (GPT-2's BPE; a BPE
trained here, 600 ids padded to 640 outputs), are exported and loaded back offline with
AutoModelForCausalLM / AutoTokenizer: the same per-token losses, the same ids, and lm-eval's own `hf`
model on the folder scores an MCQ set exactly as the `crisp` model does on the checkpoint.
"""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from crisp_pl.cli import main as crisp_main
from crisp_pl.config import TrainConfig
from crisp_pl.corpus.mcq import load_questions
from crisp_pl.corpus.tokenizer import EOS_TEXT, gpt2_tokenizer, train_bpe
from crisp_pl.evaluate.lm_eval_adapter import CrispLM, evaluate  # sets HF_HUB_OFFLINE before transformers loads
from crisp_pl.evaluate.mcq import write_tasks
from crisp_pl.model.checkpoint import load_gpt, load_tokenizer
from crisp_pl.model.export import EXPORT_INFO, ExportError, export_checkpoint, export_gpt
from crisp_pl.model.gpt import GPT, GPTConfig, padded_vocab_size
from crisp_pl.training.module import GPTModule
from crisp_pl.training.trainer import trainer_kwargs

BLOCK = 64
TEXTS = [
    "Question: Which gas do plants take in?\nAnswer: carbon dioxide",
    "  leading and trailing spaces  \n\n\n",
    "naïve 東京 ünïcödé — 12,345.6 tokens! emoji 🧬🩺, e\u0301, CRLF\r\n",
    f"a literal {EOS_TEXT} reads as the EOS id, as in lm-eval",
    "it's they'll we've I'm   three spaces\ttab",
]


def arc_texts(start: int, stop: int) -> list[str]:
    return [q.train_text() for q in load_questions("arc_easy")[start:stop]]


def windows(tokenizer, texts: list[str], n: int) -> torch.Tensor:
    """(n, BLOCK + 1) token windows of `texts` joined by EOS, as the window stores write them."""
    ids = [t for ids in tokenizer.encode_batch(texts) for t in ids + [tokenizer.eos_id]]
    assert len(ids) >= n * (BLOCK + 1)
    return torch.tensor(ids[:n * (BLOCK + 1)]).view(n, BLOCK + 1)


def train_checkpoint(folder, tokenizer, steps: int = 16):
    """A micro GPT (bias False) after `steps` real Trainer steps on ARC-Easy text, saved with its tokenizer."""
    torch.manual_seed(0)
    train = TrainConfig(max_steps=steps, batch_size=4, lr=3e-3, warmup_steps=2, accelerator="cpu", devices=1)
    gpt = GPT(GPTConfig.from_name("micro", block_size=BLOCK, vocab_size=padded_vocab_size(tokenizer.vocab_size)))
    module = GPTModule(gpt, train, tokenizer.spec())
    batches = list(windows(tokenizer, arc_texts(0, 600), 4 * steps).split(4))
    trainer = L.Trainer(**trainer_kwargs(train), default_root_dir=folder, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    trainer.save_checkpoint(folder / "micro.ckpt")
    return folder / "micro.ckpt"


def trained_and_exported(folder, tokenizer):
    """(checkpoint, exported folder, the crisp_pl tokenizer)."""
    checkpoint = train_checkpoint(folder, tokenizer)
    return checkpoint, export_checkpoint(checkpoint, folder / "hf"), tokenizer


@pytest.fixture(scope="module")
def gpt2_exported(tmp_path_factory):
    return trained_and_exported(tmp_path_factory.mktemp("export_gpt2"), gpt2_tokenizer())


@pytest.fixture(scope="module")
def bpe_exported(tmp_path_factory):
    return trained_and_exported(tmp_path_factory.mktemp("export_bpe"), train_bpe(arc_texts(0, 400), 600))


@pytest.fixture(params=["gpt2", "bpe"])
def exported(request):
    return request.getfixturevalue(f"{request.param}_exported")


def hf_load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


# --- the model ------------------------------------------------------------------------------------


def test_exported_model_has_the_checkpoints_per_token_losses(exported):
    checkpoint, folder, tokenizer = exported
    gpt, (model, _) = load_gpt(checkpoint), hf_load(folder)
    c = gpt.config
    assert (model.config.vocab_size, model.config.n_positions, model.config.n_inner) == (c.vocab_size, c.block_size, c.mlp_hidden)
    assert model.config.activation_function == "gelu_new" and model.config.layer_norm_epsilon == 1e-5
    assert model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert model.dtype == torch.float32 and (folder / "model.safetensors").is_file()
    padding = list(range(tokenizer.vocab_size, c.vocab_size))
    assert len(padding) == (47 if tokenizer.name == "gpt2" else 40)  # 50,257 -> 50,304; 600 -> 640
    assert model.generation_config.suppress_tokens == padding  # kept (the softmax runs over them), never generated
    torch.testing.assert_close(model.transformer.wte.weight, gpt.transformer.wte.weight, rtol=0, atol=0)  # padding rows too

    held_out = windows(tokenizer, arc_texts(1000, 1200), 8)  # (8, 65): text the model never trained on
    with torch.no_grad():
        ours = gpt.token_losses(held_out[:, :-1], held_out[:, 1:])  # (8, 64)
        logits = model(input_ids=held_out[:, :-1]).logits
        theirs = torch.nn.functional.cross_entropy(logits.flatten(0, 1), held_out[:, 1:].flatten(), reduction="none")
    theirs = theirs.view(ours.shape)
    rel = float(((theirs - ours).abs() / ours.abs()).max())
    print(f"\n[{tokenizer.name}] per-token loss, max relative difference HF vs crisp_pl: {rel:.3g} "
          f"(mean loss {ours.mean():.4f})")
    assert rel < 1e-4
    assert float(ours.mean()) < np.log(c.vocab_size) - 0.5  # trained: well below a uniform guess
    info = json.loads((folder / EXPORT_INFO).read_text())
    assert info["source"] == str(checkpoint.resolve()) and info["parity_max_abs_logprob_diff"] < 1e-4


def test_biases_are_mapped_when_the_gpt_has_them(tmp_path):
    torch.manual_seed(1)
    gpt = GPT(GPTConfig.from_name("micro", block_size=32, bias=True)).eval()
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.2)  # zeros would hide a bias mapped to the wrong place
    model, _ = hf_load(export_gpt(gpt, gpt2_tokenizer(), tmp_path / "hf"))
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=idx).logits, gpt(idx)[0], rtol=1e-4, atol=1e-4)


# --- the tokenizer --------------------------------------------------------------------------------


def test_tokenizer_round_trips_with_the_same_ids(exported):
    checkpoint, folder, tokenizer = exported
    _, hf_tok = hf_load(folder)
    crisp_tok = load_tokenizer(checkpoint)
    assert crisp_tok.spec() == tokenizer.spec()
    assert hf_tok.eos_token_id == hf_tok.bos_token_id == crisp_tok.eos_id and len(hf_tok) == crisp_tok.vocab_size
    assert hf_tok.model_max_length == BLOCK
    for text in TEXTS + arc_texts(2000, 2100):
        ids = crisp_tok.encode(text, allow_special=True)  # what crisp_pl's lm-eval adapter reads
        assert hf_tok.encode(text) == ids, text  # no BOS added, a literal EOS is the EOS id
        assert hf_tok.decode(ids) == text == crisp_tok.decode(ids)
    if tokenizer.name != "gpt2":
        assert hf_tok.unk_token == EOS_TEXT
        assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


# --- lm-eval: its own `hf` model on the folder against `crisp` on the checkpoint ------------------------


def test_lm_eval_hf_on_the_export_scores_as_crisp_on_the_checkpoint(exported, tmp_path):
    from lm_eval.models.huggingface import HFLM

    checkpoint, folder, tokenizer = exported
    crisp = CrispLM(checkpoint=str(checkpoint), batch_size=8)
    hf = HFLM(pretrained=str(folder), device="cpu", batch_size=8)
    # the same prefix token for an empty context (EOS: GPT-2 has no BOS), the same EOS and window
    assert (hf.prefix_token_id, hf.eot_token_id, hf.max_length) == (crisp.prefix_token_id, crisp.eot_token_id, BLOCK)

    rng = np.random.default_rng(0)
    all_questions = load_questions("arc_easy")
    questions = [all_questions[i] for i in sorted(rng.choice(range(1200, len(all_questions)), 20, replace=False))]
    pairs = [(q.prompt(), " " + c) for q in questions for c in q.choices]
    pairs += [("", "Plants make sugar."), ("Water boils at ", "100")]  # an empty context; a trailing space
    # lm-eval's TemplateLM splits every pair into the same context and continuation ids on both sides
    assert [hf._encode_pair(*p) for p in pairs if p[0]] == [crisp._encode_pair(*p) for p in pairs if p[0]]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ours, theirs = crisp.loglikelihood(requests, disable_tqdm=True), hf.loglikelihood(requests, disable_tqdm=True)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert [lp for lp, _ in theirs] == pytest.approx([lp for lp, _ in ours], rel=1e-5)

    write_tasks({"arc_easy_20": questions}, tmp_path / "tasks")
    crisp_result = evaluate(crisp, ["arc_easy_20"], include_path=tmp_path / "tasks")["arc_easy_20"]
    hf_result = evaluate(hf, ["arc_easy_20"], include_path=tmp_path / "tasks")["arc_easy_20"]
    print(f"\n[{tokenizer.name}] arc_easy_20: crisp acc {crisp_result['acc']:.3f} acc_norm {crisp_result['acc_norm']:.3f}; "
          f"hf acc {hf_result['acc']:.3f} acc_norm {hf_result['acc_norm']:.3f}")
    assert hf_result == crisp_result  # acc, acc_norm, their stderr and n: identical


# --- the folder -------------------------------------------------------------------------------------


def test_export_refuses_to_clobber_a_folder(bpe_exported, tmp_path, capsys):
    checkpoint = bpe_exported[0]  # the small one: the rules do not depend on the tokenizer
    target = tmp_path / "hf"
    assert crisp_main(["export", str(checkpoint), str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    (target / "stale.txt").write_text("from before")

    assert crisp_main(["export", str(checkpoint), str(target)]) == 1  # a previous export, no --force
    assert "not empty; pass --force" in capsys.readouterr().err
    assert (target / "stale.txt").is_file()
    assert crisp_main(["export", str(checkpoint), str(target), "--force"]) == 0  # replaced whole
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()

    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a previous export"):
        export_checkpoint(checkpoint, other, force=True)  # --force replaces exports only
    assert (other / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        export_checkpoint(checkpoint, tmp_path / "file")
    inside = tmp_path / "run"
    inside.mkdir()
    (inside / "config.json").write_text("{}")
    (inside / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match="holds the checkpoint"):
        export_checkpoint(inside / "last.ckpt", inside, force=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    export_checkpoint(checkpoint, empty)  # an empty folder is filled
    assert (empty / "config.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial or old folders left


def test_a_tokenizer_larger_than_the_output_layer_is_refused(tmp_path):
    gpt = GPT(GPTConfig.from_name("micro", block_size=32, vocab_size=640))
    with pytest.raises(ExportError, match="not the tokenizer it was trained with"):
        export_gpt(gpt, gpt2_tokenizer(), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
