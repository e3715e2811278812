"""Training throughput of the GPT: a plain PyTorch loop against the same model through Lightning.

Both paths train the same `GPT` on the same random token windows with the same recipe: AdamW
(fused on GPU) with the warmup-cosine schedule, bf16 autocast on GPU (fp32 on CPU), gradient norm
clipping, batches from the same pinned DataLoader. The Lightning path is `GPTModule` under a
`lightning.Trainer` built from `trainer_kwargs`, logging to a CSV logger as a run would, so the
ratio lightning / plain is the wrapper's whole overhead. The first `--warmup` steps (compilation,
allocator warmup) are not timed.

One JSON line per measurement, then one per size with the ratio:

    python benchmarks/train_throughput.py                      # GPU: 124m at 32x1024, 350m at 16x1024
    python benchmarks/train_throughput.py --compile --peak-flops 989e12
    python benchmarks/train_throughput.py --size micro --steps 3   # CPU smoke check, seconds

MFU = flops_per_token(seq_len) * tokens/s / peak, with GPT.flops_per_token's 6N + 12 L d T count.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from crisp_pl.config import TrainConfig
from crisp_pl.model.gpt import GPT, GPTConfig
from crisp_pl.training.module import GPTModule
from crisp_pl.training.schedule import lr_factor, param_groups
from crisp_pl.training.trainer import trainer_kwargs

GPU_BATCH = {"124m": 32, "350m": 16}  # windows per step on one 80 GB GPU (GPU.md's reference runs)
CPU_BATCH = 2  # a CPU run is a smoke check, not a measurement


def token_loader(batch_size: int, seq_len: int, vocab_size: int, steps: int, seed: int) -> torch.utils.data.DataLoader:
    """`steps` batches (B, seq_len + 1) cycling over 4 fixed random ones, pinned when a GPU is there."""
    generator = torch.Generator().manual_seed(seed)
    batches = torch.randint(0, vocab_size, (4, batch_size, seq_len + 1), generator=generator)
    return torch.utils.data.DataLoader([batches[i % 4] for i in range(steps)], batch_size=None,
                                       pin_memory=torch.cuda.is_available())


def build_gpt(size: str, seq_len: int, seed: int, device: torch.device, compile: bool) -> GPT:
    torch.manual_seed(seed)  # the same initial weights for both paths
    gpt = GPT(GPTConfig.from_name(size, block_size=seq_len)).to(device)
    if compile:
        gpt.compile()  # in place: the state dict keeps its names
    return gpt


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_plain(gpt: GPT, train: TrainConfig, loader, warmup: int, device: torch.device) -> float:
    """Seconds for the steps after `warmup`, in a hand-written loop doing what GPTModule + Trainer do."""
    optimizer = torch.optim.AdamW(param_groups(gpt, train.weight_decay), lr=train.lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, train.warmup_steps, train.max_steps, train.min_lr_ratio))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    gpt.train()
    started = None
    for step, batch in enumerate(loader):
        if step == warmup:
            started = sync(device)
        batch = batch.to(device, non_blocking=True)
        with autocast:
            _, loss = gpt(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return sync(device) - started


class StepTimer(Callback):
    """Synchronized wall time from the end of step `warmup - 1` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.ended = warmup, None, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.warmup - 1:
            self.started = sync(module.device)
        if trainer.global_step >= trainer.max_steps:
            self.ended = sync(module.device)


def run_lightning(gpt: GPT, train: TrainConfig, loader, warmup: int, log_dir: str) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(**trainer_kwargs(train), logger=CSVLogger(log_dir), callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(GPTModule(gpt, train), loader)
    return timer.ended - timer.started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs="+", default=["124m", "350m"], help="named GPT sizes")
    parser.add_argument("--batch-size", type=int, help="windows per step (default: 32 for 124m, 16 for 350m, "
                                                       f"8 for other sizes on GPU; {CPU_BATCH} on CPU)")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens the model reads per window")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 10 on GPU, 1 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the GPT in both paths")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="peak FLOP/s for MFU (H100 bf16 dense)")
    parser.add_argument("--impl", nargs="+", default=["plain", "lightning"], choices=["plain", "lightning"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 leftovers of bf16 autocast
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    if warmup < 1:
        parser.error("--warmup must be >= 1 (the first step compiles and allocates)")

    for size in args.size:
        batch = args.batch_size or (GPU_BATCH.get(size, 8) if device.type == "cuda" else CPU_BATCH)
        total = warmup + args.steps
        # The project's recipe; devices=1 keeps a multi-GPU host from launching DDP here.
        train = TrainConfig(max_steps=total, batch_size=batch, lr=1e-4, warmup_steps=min(10, total), devices=1,
                            log_every=10)
        results = {}
        for impl in args.impl:
            gpt = build_gpt(size, args.seq_len, args.seed, device, args.compile)
            loader = token_loader(batch, args.seq_len, gpt.config.vocab_size, total, args.seed)
            if impl == "plain":
                seconds = run_plain(gpt, train, loader, warmup, device)
            else:
                with tempfile.TemporaryDirectory() as log_dir:
                    seconds = run_lightning(gpt, train, loader, warmup, log_dir)
            tokens_per_s = args.steps * batch * args.seq_len / seconds
            results[impl] = tokens_per_s
            print(json.dumps({
                "impl": impl, "size": size, "tokens_per_s": round(tokens_per_s, 1),
                "mfu": float(f"{gpt.flops_per_token(args.seq_len) * tokens_per_s / args.peak_flops:.4g}"),
                "device": device_name, "batch": batch, "seq_len": args.seq_len, "steps": args.steps,
                "compile": args.compile, "params": gpt.num_params(non_embedding=False),
                "torch": torch.__version__, "lightning": L.__version__,
            }), flush=True)
            del gpt, loader
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if len(results) == 2:
            print(json.dumps({"impl": "lightning/plain", "size": size, "device": device_name,
                              "ratio": round(results["lightning"] / results["plain"], 4)}), flush=True)


if __name__ == "__main__":
    main()
