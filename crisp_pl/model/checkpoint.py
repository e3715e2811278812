"""Read a trained GPT and its tokenizer back from a Lightning checkpoint file, without Lightning
(evaluation, export). The tokenizer's spec (crisp_pl.corpus.tokenizer) sits in the checkpoint dict
under `crisp_tokenizer`, written by the GPTModule; a checkpoint without one is GPT-2's."""

from __future__ import annotations

from pathlib import Path

import torch

from crisp_pl.corpus.tokenizer import Tokenizer, gpt2_tokenizer, tokenizer_from_spec
from crisp_pl.model.gpt import GPT, GPTConfig

TOKENIZER_KEY = "crisp_tokenizer"


def load_gpt(checkpoint_path: str | Path) -> GPT:
    """The plain GPT stored in a checkpoint written by a Trainer fitting a GPTModule (on the CPU, eval mode)."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    if "gpt_config" not in hparams:
        raise ValueError(f"{path}: not a GPTModule checkpoint (no `gpt_config` in its hyper_parameters)")
    gpt = GPT(GPTConfig(**hparams["gpt_config"]))
    # Keys are "gpt.<name>" in the module; "_orig_mod." appears when the GPT was wrapped by torch.compile.
    state = {k.removeprefix("gpt.").replace("_orig_mod.", ""): v for k, v in checkpoint["state_dict"].items()
             if k.startswith("gpt.")}
    gpt.load_state_dict(state)
    return gpt.eval()


def load_tokenizer(checkpoint_path: str | Path) -> Tokenizer:
    """The tokenizer a checkpoint's GPT was trained with (GPT-2's when the checkpoint names none)."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    spec = torch.load(path, map_location="cpu", weights_only=True).get(TOKENIZER_KEY)
    return gpt2_tokenizer() if spec is None else tokenizer_from_spec(spec)
