"""lm-eval 0.4.13 on any causal LM: crisp_pl GPT checkpoints and Hugging Face models, one scoring path.

`CrispLM` is registered with lm-eval as `crisp`. It wraps a `CausalLM`: a function from token ids
(B, T) to logits (B, T, V) plus the model's tokenizer. Scoring follows lm-eval's `HFLM` exactly:
the (context, continuation) pair is encoded by lm-eval's own `TemplateLM._encode_pair` (trailing
spaces of the context move onto the continuation; the whole text is encoded, then split), an empty
context becomes the prefix token (a crisp_pl tokenizer's EOS, 50256 for GPT-2; an HF tokenizer's BOS, else its EOS), requests
run longest first in right-padded batches, context+continuation is cut from the left to the model's
length, and the answer is the summed log-probability of the continuation tokens with whether each
of them is the argmax.

    lm = CrispLM(checkpoint="results/.../last.ckpt", batch_size=16)           # a crisp_pl GPT checkpoint, with its tokenizer
    lm = CrispLM.from_gpt(gpt, tokenizer=tok)                                # an in-memory GPT (GPT-2's tokenizer when None)
    lm = CrispLM(hf=SMOLLM2_DIR, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf") # a transformers model
    evaluate(lm, ["arc_easy_test"], include_path=folder)    # tasks written by crisp_pl.evaluate.mcq.write_tasks
    # -> {"arc_easy_test": {"acc": ..., "acc_norm": ..., "acc_stderr": ..., "acc_norm_stderr": ..., "n": 1188.0}}

Rolling log-likelihood (perplexity tasks) uses lm-eval's windows: the first window is the prefix
token + the first max_length - 1 tokens; each later window predicts the next max_length tokens
with the tokens just before them as context, so every token is predicted once:

    tokens 0..9, max_length 4:   input [P 0 1 2] predicts 0 1 2 3;  [3 4 5 6] -> 4 5 6 7;  [5 6 7 8] -> 8 9

The shell command hands its arguments to lm-eval's own CLI with `crisp` registered, so every
lm-eval flag works:

    python -m crisp_pl.evaluate.lm_eval_adapter --model crisp --model_args checkpoint=PATH \\
        --tasks arc_easy_test --include_path FOLDER [--limit 100] [--output_path out/]

Logits are computed for every position of a batch: a GPT with a 1024-token context and its 50,304
outputs needs B x 1024 x 50,304 floats per batch, so lower `batch_size` for long rolling windows.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")  # before lm_eval imports datasets / transformers: never reach for the hub

import torch  # noqa: E402
from lm_eval import utils as lm_eval_utils  # noqa: E402
from lm_eval.api.model import TemplateLM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from crisp_pl.progress import bar  # noqa: E402

from crisp_pl.corpus.tokenizer import Tokenizer, gpt2_tokenizer  # noqa: E402
from crisp_pl.model.checkpoint import load_gpt, load_tokenizer  # noqa: E402

DEFAULT_BATCH_SIZE = 16
logger = logging.getLogger(__name__)

Tokens = list[int]
Request = tuple[Any, Tokens, Tokens]  # (cache key or None, context tokens, continuation tokens)


@dataclass(frozen=True)
class CausalLM:
    """What scoring needs of a causal LM; see `gpt_causal_lm` and `hf_causal_lm`."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    """(B, T) token ids on `device` -> (B, T, V) next-token logits; rows are right-padded."""
    encode: Callable[..., Tokens]
    """`encode(text, add_special_tokens=None)` -> token ids; None means the tokenizer's default."""
    decode: Callable[[Tokens], str]
    prefix_id: int
    """The token an empty context (and the first rolling window) is conditioned on."""
    eot_id: int
    """End of text."""
    max_length: int
    """Longest input the model takes."""
    name: str
    device: str = "cpu"
    module: Any = None
    """The underlying network (a crisp_pl GPT or a transformers model), for callers that need it."""
    tokenizer: Any = None
    """The underlying tokenizer (a crisp_pl `Tokenizer` or a transformers tokenizer)."""


def gpt_causal_lm(gpt, device: str = "cpu", name: str = "crisp_pl GPT", tokenizer: Tokenizer | None = None) -> CausalLM:
    """A crisp_pl `GPT` with the tokenizer it was trained with (GPT-2's when None; a checkpoint's is
    `crisp_pl.model.checkpoint.load_tokenizer`). The GPT itself is moved to `device` and put in eval mode."""
    tokenizer = tokenizer or gpt2_tokenizer()
    if tokenizer.vocab_size > gpt.config.vocab_size:
        raise ValueError(f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids, more than the GPT's "
                         f"{gpt.config.vocab_size} outputs: not the tokenizer it was trained with")
    gpt = gpt.to(device).eval()

    def encode(text: str, add_special_tokens: bool | None = None) -> Tokens:
        # no BOS (GPT-2 has none); a literal "<|endoftext|>" is the EOS token, as in Hugging Face's GPT-2 tokenizer
        return tokenizer.encode(text, allow_special=True)

    return CausalLM(logits=lambda idx: gpt(idx)[0], encode=encode, decode=tokenizer.decode, prefix_id=tokenizer.eos_id,
                    eot_id=tokenizer.eos_id, max_length=gpt.config.block_size, name=name, device=device,
                    module=gpt, tokenizer=tokenizer)


def hf_causal_lm(model, tokenizer, device: str = "cpu", max_length: int | None = None, name: str | None = None) -> CausalLM:
    """A transformers causal LM (moved to `device`, eval mode) and its tokenizer, used as lm-eval's HFLM uses them."""
    from lm_eval.models.utils import resolve_max_length

    model = model.to(device).eval()
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix_text = tokenizer.decode([prefix_id])

    def encode(text: str, add_special_tokens: bool | None = None) -> Tokens:
        if add_special_tokens is None and text.startswith(prefix_text):
            add_special_tokens = False  # the text already starts with BOS (HFLM.tok_encode)
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return tokenizer.encode(text, **kwargs)

    return CausalLM(logits=lambda idx: model(input_ids=idx).logits, encode=encode, decode=tokenizer.decode,
                    prefix_id=prefix_id, eot_id=tokenizer.eos_token_id,
                    max_length=max_length or resolve_max_length(model.config, tokenizer),
                    name=name or getattr(model.config, "name_or_path", "") or type(model).__name__, device=device,
                    module=model, tokenizer=tokenizer)


def load_hf(folder: str | Path, gguf_file: str | None = None):
    """(model, tokenizer) from a local transformers folder, or from the GGUF file `gguf_file` inside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    target = folder / gguf_file if gguf_file else folder
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such {'GGUF file' if gguf_file else 'model folder'}")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except ValueError as error:
        if "accelerate" in str(error):  # transformers reads GGUF files only with accelerate installed
            raise ImportError(f"{target}: loading a GGUF model needs `accelerate`: pip install accelerate") from None
        raise
    return model, tokenizer


class CrispLM(TemplateLM):
    """lm-eval model `crisp`: log-likelihood scoring of a crisp_pl GPT checkpoint or a Hugging Face causal LM.

    Give exactly one of `checkpoint` (a Lightning checkpoint of a GPTModule), `hf` (a local model
    folder, with `gguf_file` for a GGUF inside it) or `model` (a `CausalLM`). lm-eval passes
    `--model_args` values as strings or numbers; `max_batch_size` (lm-eval's auto batch size) is ignored.
    """

    def __init__(self, checkpoint: str | None = None, hf: str | None = None, gguf_file: str | None = None,
                 batch_size: int | str = DEFAULT_BATCH_SIZE, device: str | None = "cpu",
                 max_length: int | str | None = None, max_batch_size: int | None = None,
                 model: CausalLM | None = None):
        super().__init__()
        given = [name for name, value in (("checkpoint", checkpoint), ("hf", hf), ("model", model)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"crisp model_args: give exactly one of checkpoint=PATH or hf=DIR (got {given or 'neither'})")
        self._batch_size = _positive_int("batch_size", batch_size)
        device = _resolve_device(device)
        max_length = None if max_length is None else _positive_int("max_length", max_length)
        if checkpoint is not None:
            model = gpt_causal_lm(load_gpt(checkpoint), device, name=str(checkpoint), tokenizer=load_tokenizer(checkpoint))
        elif hf is not None:
            model = hf_causal_lm(*load_hf(hf, gguf_file), device=device, name=f"{hf}/{gguf_file}" if gguf_file else str(hf))
        if max_length is not None:  # may only shorten what the model takes
            if max_length > model.max_length:
                raise ValueError(f"crisp model_args: max_length={max_length} exceeds the model's {model.max_length}")
            model = replace(model, max_length=max_length)
        self.model = model
        self._device = torch.device(model.device)

    @classmethod
    def from_gpt(cls, gpt, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu",
                 tokenizer: Tokenizer | None = None) -> CrispLM:
        """Score an in-memory crisp_pl `GPT` (e.g. right after training) with its tokenizer (None: GPT-2's)."""
        return cls(model=gpt_causal_lm(gpt, device, tokenizer=tokenizer), batch_size=batch_size)

    @classmethod
    def from_hf(cls, model, tokenizer, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> CrispLM:
        """Score an in-memory transformers causal LM with its tokenizer."""
        return cls(model=hf_causal_lm(model, tokenizer, device), batch_size=batch_size)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> CrispLM:
        # lm-eval's CLI always sends its own batch_size (default 1) and device: `--model_args` win over them
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> CrispLM:
        return cls.create_from_arg_obj(lm_eval_utils.simple_parse_args_string(arg_string), additional_config)

    # --- what lm-eval's TemplateLM asks of a model --------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.model.eot_id

    @property
    def prefix_token_id(self) -> int:
        return self.model.prefix_id

    @property
    def max_length(self) -> int:
        return self.model.max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> Tokens:
        return self.model.encode(string, add_special_tokens)

    def tok_decode(self, tokens: Tokens) -> str:
        return self.model.decode(tokens)

    def get_model_info(self) -> dict:
        return {"model": self.model.name, "max_length": self.max_length}

    def _loglikelihood_tokens(self, requests: Sequence[Request], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log P(continuation | context), greedy) per (key, context tokens, continuation tokens), in input order."""
        # longest first (as HFLM): a batch's first row sets its padded length, and memory errors come early
        order = sorted(range(len(requests)), key=lambda i: (-len(requests[i][1]) - len(requests[i][2]),
                                                            tuple(requests[i][1] + requests[i][2])))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        progress = bar(total=len(requests), disable=disable_tqdm, desc="loglikelihood requests")
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, answer in zip(batch, self._score_batch([requests[i] for i in batch])):
                results[i] = answer
                if requests[i][0] is not None:  # lets lm-eval's CachingLM (--use_cache) store it
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            progress.update(len(batch))
        progress.close()
        return results

    @torch.inference_mode()
    def _score_batch(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
        rows, spans = [], []
        for _, context, continuation in requests:
            if not context or not continuation:
                raise ValueError("a loglikelihood request needs a non-empty context and continuation")
            if len(continuation) > self.max_length:
                raise ValueError(f"continuation of {len(continuation)} tokens is longer than the model's "
                                 f"max_length={self.max_length}")
            # keep the last max_length + 1 tokens; the input is all but the last, which is only predicted
            row = (context + continuation)[-(self.max_length + 1):][:-1]
            rows.append(row)
            spans.append((len(row) - len(continuation), len(row), continuation))
        width = max(len(row) for row in rows)
        idx = torch.tensor([row + [0] * (width - len(row)) for row in rows], dtype=torch.long, device=self.device)  # (B, T)
        logits = self.model.logits(idx)  # (B, T, V); right padding cannot change earlier positions
        # the predictions of every continuation token of the batch, gathered into one (N, V) block
        rows_of = torch.tensor([b for b, (first, end, _) in enumerate(spans) for _ in range(first, end)], device=self.device)
        positions = torch.tensor([p for first, end, _ in spans for p in range(first, end)], device=self.device)
        targets = torch.tensor([t for _, _, continuation in spans for t in continuation], device=self.device)
        chosen = logits[rows_of, positions].float()  # (N, V)
        logprobs = chosen.gather(1, targets[:, None]).squeeze(1) - chosen.logsumexp(dim=-1)  # (N,) log-softmax at the targets
        greedy = chosen.argmax(dim=-1) == targets  # (N,)
        lengths = [len(continuation) for _, _, continuation in spans]
        return [(float(lp.sum()), bool(g.all())) for lp, g in zip(logprobs.split(lengths), greedy.split(lengths))]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Summed log-probability of each whole text, over lm-eval's disjoint rolling windows."""
        windows, owners = [], []
        for n, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(lm_eval_utils.make_disjoint_window, lm_eval_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[n] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        tasks = sorted({getattr(request, "task_name", None) or "?" for request in requests})
        raise NotImplementedError(f"the `crisp` lm-eval model scores log-likelihoods only (multiple_choice and "
                                  f"loglikelihood_rolling tasks); task(s) {', '.join(tasks)} need text generation")


if __name__ != "__main__":
    # registered once, under this module's real name: `python -m` runs the file as __main__ and then
    # imports it properly (below), and lm-eval refuses a second class for the same name. lm-eval loads
    # its own models (hf, ...) only into an empty registry, so they are loaded first.
    import lm_eval.models  # noqa: E402, F401

    register_model("crisp")(CrispLM)


def _resolve_device(device: str | None) -> str:
    """None / "auto" -> cuda when visible, else cpu. A cuda device on a machine without CUDA falls back
    to the cpu (as lm-eval's HFLM does): lm-eval's CLI asks for `cuda:0` unless told `--device`."""
    cuda = torch.cuda.is_available()
    if device in (None, "auto"):
        return "cuda" if cuda else "cpu"
    if str(device).startswith("cuda") and not cuda:
        logger.warning("crisp: device %r asked for but CUDA is not available; scoring on the cpu", device)
        return "cpu"
    return str(device)


def _positive_int(key: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"crisp model_args: {key} must be a positive integer, got {value!r}")
    return number


# --- running tasks ------------------------------------------------------------------------------------


def run_tasks(lm: CrispLM, tasks: Sequence[str], include_path: str | Path, limit: int | float | None = None,
              num_fewshot: int = 0, log_samples: bool = False) -> dict:
    """lm-eval's raw results dict for local tasks (the YAMLs under `include_path`) scored by `lm`.

    Only `include_path` is indexed, not lm-eval's thousands of built-in YAMLs (~17 s). The global
    random / numpy / torch seeds are left alone (lm-eval would reseed them); few-shot sampling has
    its own seeded generator.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path)
    if not include_path.is_dir():
        raise FileNotFoundError(f"{include_path}: no such task folder (write one with crisp_pl.evaluate.mcq.write_tasks)")
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    missing = [task for task in tasks if task not in manager.all_tasks]
    if missing:
        raise LookupError(f"{include_path}: no task YAML for {', '.join(missing)} (found: {', '.join(sorted(manager.all_tasks))})")
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                   num_fewshot=num_fewshot, log_samples=log_samples, random_seed=None,
                                   numpy_random_seed=None, torch_random_seed=None)


def evaluate(lm: CrispLM, tasks: Sequence[str], include_path: str | Path, limit: int | float | None = None,
             num_fewshot: int = 0, log_samples: bool = False) -> dict[str, dict[str, float]]:
    """Per task: acc, acc_norm, their standard errors and n (questions scored), as plain floats."""
    return summarize(run_tasks(lm, tasks, include_path, limit, num_fewshot, log_samples), tasks)


def summarize(results: dict, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """The multiple-choice metrics of `tasks` from lm-eval's results dict."""
    summary = {}
    for task in tasks:
        metrics = results["results"][task]
        row = {name: float(metrics[f"{name},none"]) for name in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")}
        row["n"] = float(results["n-samples"][task]["effective"])
        summary[task] = row
    return summary


# --- the shell command --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """lm-eval's own CLI (`lm-eval run|ls|validate ...`) with the `crisp` model registered.

    Without `--batch_size` (or `batch_size=` in `--model_args`) a run uses 16, not lm-eval's 1.
    """
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--model" in args and not any(a == "-b" or a.startswith("--batch") or "batch_size=" in a for a in args):
        args += ["--batch_size", str(DEFAULT_BATCH_SIZE)]
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # lm-eval's CLI parses sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    from crisp_pl.evaluate.lm_eval_adapter import main as registered_main

    sys.exit(registered_main())
