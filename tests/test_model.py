"""The GPT, its LightningModule and the optimizer schedule, on real micro models on the CPU."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from crisp_pl.config import TrainConfig
from crisp_pl.model.gpt import GPT, SIZES, GPTConfig
from crisp_pl.model.checkpoint import load_gpt
from crisp_pl.training.module import GPTModule
from crisp_pl.training.schedule import lr_factor
from crisp_pl.training.trainer import trainer_kwargs

TEXT = (
    "Clustered importance sampling builds a pretraining set for a specialist task from a large generalist "
    "corpus. The generalist documents are embedded and clustered; the histogram of the specialist data over "
    "the clusters gives the weight of each cluster, and pretraining batches are drawn with those weights. "
)


def micro(block_size: int = 32, **overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("micro", block_size=block_size, **overrides))


def text_windows(n: int, length: int) -> torch.Tensor:
    """(n, length) windows of the UTF-8 bytes of TEXT: real text, ids < 256, no tokenizer files needed."""
    data = torch.tensor(list((TEXT * 8).encode()), dtype=torch.long)
    return torch.stack([data[i * 17: i * 17 + length] for i in range(n)])


# --- the network ----------------------------------------------------------------------------------


def test_shapes_loss_at_init_and_token_losses():
    gpt = micro().eval()
    idx = torch.randint(0, gpt.config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    targets = torch.roll(idx, -1, dims=1)
    logits, loss = gpt(idx, targets)
    assert logits.shape == (3, 32, 50304)
    assert gpt(idx)[1] is None
    assert loss.item() == pytest.approx(math.log(50304), abs=0.1)  # near-uniform predictions at init
    nll = gpt.token_losses(idx, targets)
    assert nll.shape == (3, 32) and nll.dtype == torch.float32
    assert nll.mean().item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="block_size=32"):
        gpt(torch.zeros(1, 33, dtype=torch.long))


def test_causal_a_future_token_does_not_change_earlier_logits():
    gpt = micro().eval()
    idx = torch.randint(0, 1000, (2, 20), generator=torch.Generator().manual_seed(2))
    changed = idx.clone()
    changed[:, 12] = (changed[:, 12] + 1) % 1000
    before, after = gpt(idx)[0], gpt(changed)[0]
    torch.testing.assert_close(before[:, :12], after[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 12:], after[:, 12:])


def test_tied_embeddings_and_gpt2_init():
    gpt = micro()
    assert gpt.lm_head.weight is gpt.transformer.wte.weight
    assert gpt.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    c_proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in gpt.transformer.h])
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.05)  # scaled residual branch


def test_flops_formula_exact_for_a_constructed_config():
    config = GPTConfig(n_layer=2, n_head=2, n_embd=8, mlp_hidden=16, block_size=4, vocab_size=32)
    gpt = GPT(config)
    # Per block: ln_1 8 + c_attn 8*24 + attn c_proj 8*8 + ln_2 8 + c_fc 8*16 + mlp c_proj 16*8 = 528;
    # plus ln_f 8 and the tied token embedding 32*8 = 256; positions (4*8 = 32) only in the full count.
    assert gpt.num_params() == 2 * 528 + 8 + 256 == 1320
    assert gpt.num_params(non_embedding=False) == 1320 + 32
    assert gpt.flops_per_token(4) == 6 * 1320 + 12 * 2 * 8 * 4 == 8688


def _params_analytic(c: GPTConfig) -> int:
    block = 4 * c.n_embd * c.n_embd + 2 * c.n_embd * c.mlp_hidden + 2 * c.n_embd  # no biases
    return c.n_layer * block + c.n_embd + (c.vocab_size + c.block_size) * c.n_embd


@pytest.mark.parametrize("name", list(SIZES))
def test_every_named_size_builds_on_meta_with_the_expected_count(name):
    config = GPTConfig.from_name(name)
    with torch.device("meta"):  # shapes only: 6.7b costs no memory here
        gpt = GPT(config)
    assert gpt.num_params(non_embedding=False) == _params_analytic(config)


def test_paper_sizes_have_their_nominal_parameter_counts():
    for name, nominal in (("124m", 124e6), ("350m", 350e6), ("1.3b", 1.3e9), ("6.7b", 6.7e9)):
        assert _params_analytic(SIZES[name]) == pytest.approx(nominal, rel=0.04), name


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="known: .*350m"):
        GPTConfig.from_name("medium")
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.from_name("micro", n_layers=3)
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig(n_layer=1, n_head=3, n_embd=64, mlp_hidden=64)


# --- optimizer and schedule ----------------------------------------------------------------------


def test_lr_schedule_exact_values_through_the_scheduler():
    train = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    setup = GPTModule(micro(), train).configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["interval"] == "step"
    seen = []
    for _ in range(120):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert seen[9] == pytest.approx(1e-3) and seen[10] == pytest.approx(1e-3)  # warmup end: the peak
    assert seen[60] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way down the cosine
    assert seen[110] == pytest.approx(1e-4) and seen[119] == pytest.approx(1e-4)  # lr * min_lr_ratio, then flat
    assert all(a >= b for a, b in zip(seen[10:], seen[11:]))
    assert lr_factor(0, 0, 10, 0.1) == 1.0  # no warmup: starts at the peak


def test_weight_decay_only_on_matrices_and_embeddings():
    gpt = micro()
    groups = GPTModule(gpt, TrainConfig(weight_decay=0.1)).configure_optimizers()["optimizer"].param_groups
    decayed, plain = groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert decayed["betas"] == (0.9, 0.95)
    names = {id(p): n for n, p in gpt.named_parameters()}  # the tied matrix appears once, as wte
    assert sorted(names[id(p)] for p in plain["params"]) == sorted(n for n, p in gpt.named_parameters() if "ln_" in n)
    assert {names[id(p)] for p in decayed["params"]} >= {"transformer.wte.weight", "transformer.wpe.weight",
                                                        "transformer.h.0.attn.c_attn.weight"}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(gpt.parameters()))


def test_trainer_kwargs_on_cpu():
    kwargs = trainer_kwargs(TrainConfig(max_steps=7, grad_clip=5.0, log_every=3))
    assert kwargs["precision"] == "32-true" and kwargs["max_steps"] == 7
    assert kwargs["gradient_clip_val"] == 5.0 and kwargs["log_every_n_steps"] == 3
    assert trainer_kwargs(TrainConfig(precision="bf16-mixed"))["precision"] == "bf16-mixed"


# --- a real Trainer ------------------------------------------------------------------------------


class LossHistory(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def test_trainer_fit_learns_logs_counters_and_round_trips_a_checkpoint(tmp_path):
    gpt = micro(block_size=64)
    train = TrainConfig(max_steps=20, lr=3e-3, warmup_steps=2, log_every=1, batch_size=8)
    batch = text_windows(8, 65)  # one fixed batch of real text, repeated
    loader = torch.utils.data.DataLoader([batch] * train.max_steps, batch_size=None)
    history = LossHistory()
    trainer = L.Trainer(**trainer_kwargs(train), default_root_dir=tmp_path, logger=False, callbacks=[history],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    module = GPTModule(gpt, train)
    trainer.fit(module, loader)

    assert len(history.losses) == 20
    assert history.losses[0] == pytest.approx(math.log(50304), abs=0.15)
    assert all(b < a for a, b in zip(history.losses, history.losses[1:]))  # memorising the batch: 10.8 -> ~6.4
    assert history.losses[-1] < history.losses[0] - 3.0
    metrics = trainer.logged_metrics
    assert metrics["train/tokens"].item() == 20 * 8 * 64
    assert metrics["train/flops"].item() == pytest.approx(gpt.flops_per_token(64) * 20 * 8 * 64, rel=1e-6)
    assert metrics["train/lr"].item() == pytest.approx(lr_factor(19, 2, 20, 0.1) * 3e-3, rel=1e-5)

    # val/loss is weighted by tokens: uneven batches (5 windows, then 1) do not count equally.
    windows = text_windows(6, 65)
    val_loader = torch.utils.data.DataLoader([windows[:5], windows[5:]], batch_size=None)
    val_loss = trainer.validate(module, val_loader, verbose=False)[0]["val/loss"]
    expected = gpt.eval().token_losses(windows[:, :-1], windows[:, 1:]).mean().item()
    assert val_loss == pytest.approx(expected, rel=1e-5)

    path = tmp_path / "final.ckpt"
    trainer.save_checkpoint(path)
    reloaded = load_gpt(path)
    assert reloaded.config == gpt.config and not reloaded.training
    with torch.no_grad():
        torch.testing.assert_close(reloaded(windows[:, :-1])[0], gpt(windows[:, :-1])[0], rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["crisp_counters"]["tokens_seen"] == 20 * 8 * 64


def test_load_gpt_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_gpt(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a GPTModule checkpoint"):
        load_gpt(tmp_path / "other.ckpt")
