"""Training throughput of the GPT: a plain PyTorch loop against the same model through Lightning.

Both paths train the same `GPT` on the same random token windows, drawn through the training data path
of a CRISP run (GroupSampler over clusters, WindowDataset, DataLoader), with the same recipe: AdamW
(fused on GPU) with the warmup-cosine schedule, bf16 autocast on GPU (fp32 on CPU), gradient norm
clipping, batches from the same pinned DataLoader. The Lightning path is `GPTModule` under a
`lightning.Trainer` built from `trainer_kwargs`, logging to a CSV logger as a run would, so the
ratio lightning / plain is the wrapper's whole overhead. The first `--warmup` steps (compilation,
allocator warmup) are not timed.

The Lightning path also reports `data_share`: the part of its timed wall time spent between one step's end
and the next one's start, fetching the batch (the goal: under 2%). One JSON line per measurement, then
one per size with the ratio, each appended to benchmarks/results/train_throughput.jsonl (benchmarks/record.py):

    python benchmarks/train_throughput.py                      # GPU: 124m at 32x1024, 350m at 16x1024
    python benchmarks/train_throughput.py --compile --peak-flops 989e12
    python benchmarks/train_throughput.py --size micro --steps 3   # CPU smoke check, seconds
    python benchmarks/train_throughput.py --size 124m --impl lightning --strategy fsdp   # Lightning's FSDP (GPU only)

MFU = flops_per_token(seq_len) * tokens/s / peak, with GPT.flops_per_token's 6N + 12 L d T count.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from record import record  # benchmarks/record.py: run as a script, its folder is on the path
from crisp_pl.config import TrainConfig
from crisp_pl.sampling import Groups
from crisp_pl.training.datamodule import SelectionDataModule
from crisp_pl.model.gpt import GPT, GPTConfig
from crisp_pl.training.module import GPTModule
from crisp_pl.training.schedule import lr_factor, param_groups
from crisp_pl.training.trainer import trainer_kwargs

GPU_BATCH = {"124m": 32, "350m": 16}  # windows per step on one 80 GB GPU (GPU.md's reference runs)
CPU_BATCH = 2  # a CPU run is a smoke check, not a measurement


class ArrayStore:
    """Token windows in memory, read as a WindowStore is (`tokens(indices)`): the disk read is left out, which
    the page cache serves on a real run."""

    def __init__(self, windows: np.ndarray):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def tokens(self, indices) -> np.ndarray:
        return self.windows[np.asarray(indices)]


def sampler_loader(batch_size: int, seq_len: int, vocab_size: int, steps: int, seed: int) -> torch.utils.data.DataLoader:
    """The training data path of a CRISP run: SelectionDataModule's loader (GroupSampler drawing a cluster by
    its weight, then a window inside it; WindowDataset; collate) over 8,192 random windows in 1,024
    clusters of random sizes and weights."""
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, vocab_size, (8192, seq_len + 1), dtype=np.uint16)
    groups = Groups.from_labels("pool", rng.integers(0, 1024, len(windows)), rng.dirichlet(np.ones(1024)))
    data = SelectionDataModule(ArrayStore(windows), groups, batch_size=batch_size, max_steps=steps, seed=seed)
    loader = data.train_dataloader()
    loader.pin_memory = torch.cuda.is_available()
    return loader


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
    """Synchronized wall time from the end of step `warmup - 1` to the end of the last step, and the part of it
    spent between one step's end and the next one's start: fetching the batch (sampler, dataset, collate)."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.ended, self.last_end, self.waiting = warmup, None, None, None, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.started is not None and self.last_end is not None:
            self.waiting += time.perf_counter() - self.last_end

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == self.warmup - 1:
            self.started = sync(module.device)
        if trainer.global_step >= trainer.max_steps:
            self.ended = sync(module.device)
        self.last_end = sync(module.device)


def run_lightning(gpt: GPT, train: TrainConfig, loader, warmup: int, log_dir: str) -> tuple[float, float]:
    """Timed seconds and the share of them spent fetching batches."""
    timer = StepTimer(warmup)
    trainer = L.Trainer(**trainer_kwargs(train), logger=CSVLogger(log_dir), callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(GPTModule(gpt, train), loader)
    seconds = timer.ended - timer.started
    return seconds, timer.waiting / seconds


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
    parser.add_argument("--strategy", default="auto", help="the Lightning path's `train.strategy` (e.g. fsdp; the plain loop has none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.strategy != "auto" and "plain" in args.impl:
        parser.error("--strategy applies to the Lightning path only: add --impl lightning")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 leftovers of bf16 autocast
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    if warmup < 1:
        parser.error("--warmup must be >= 1 (the first step compiles and allocates)")

    for size in args.size:
        batch = args.batch_size or (GPU_BATCH.get(size, 8) if device.type == "cuda" else CPU_BATCH)
        total = warmup + args.steps
        # The project's recipe; devices=1 keeps a multi-GPU host from launching DDP here.
        train = TrainConfig(max_steps=total, batch_size=batch, lr=1e-4, warmup_steps=min(10, total), devices=1,
                            log_every=10, strategy=args.strategy)
        results = {}
        for impl in args.impl:
            gpt = build_gpt(size, args.seq_len, args.seed, device, args.compile)
            loader = sampler_loader(batch, args.seq_len, gpt.config.vocab_size, total, args.seed)
            data_share = None
            if impl == "plain":
                seconds = run_plain(gpt, train, loader, warmup, device)
            else:
                with tempfile.TemporaryDirectory() as log_dir:
                    seconds, data_share = run_lightning(gpt, train, loader, warmup, log_dir)
            tokens_per_s = args.steps * batch * args.seq_len / seconds
            results[impl] = tokens_per_s
            record("train_throughput", {
                "impl": impl, "size": size, "tokens_per_s": round(tokens_per_s, 1),
                "mfu": float(f"{gpt.flops_per_token(args.seq_len) * tokens_per_s / args.peak_flops:.4g}"),
                "batch": batch, "seq_len": args.seq_len, "steps": args.steps, "threads": torch.get_num_threads(),
                "compile": args.compile, "params": gpt.num_params(non_embedding=False),
                **({"strategy": args.strategy} if impl == "lightning" else {}),
                **({"data_share": round(data_share, 4)} if data_share is not None else {}),
            })
            del gpt, loader
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if len(results) == 2:
            record("train_throughput", {"impl": "lightning/plain", "size": size, "batch": batch, "seq_len": args.seq_len,
                                        "ratio": round(results["lightning"] / results["plain"], 4)})


if __name__ == "__main__":
    main()
