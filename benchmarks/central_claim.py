"""The paper's central claim at a small size, measured by hand: with the specialist domain held out of
the pool, does training on CRISP's selection give a lower held-out specialist loss than training on the
whole pool, averaged over two seeds, by more than the two methods' seed-to-seed spread? Same tokens
for both. Not yet a test: at this size it does not hold (see the issue note); it becomes the slow
test of the central claim once a size where it holds is found.

    .venv/bin/python benchmarks/central_claim.py [RESULTS_DIR]
"""

import json
import sys
import tempfile

import numpy as np

from crisp_pl.cache import StageCache
from crisp_pl.config import build_run_config
from crisp_pl.stages import eval_stage, prepare, selection_stage, train_stage

SEEDS = (0, 1)
# Medical is the specialist domain, held out of the pool (the default). The pool mixes what is near it
# (Wikipedia's biology and health leads among the others) with what is far (news, code, drama).
CLAIM = {
    "corpus": {"window_length": 64, "max_chars_per_doc": 1500, "tokenizer": "bpe", "bpe_vocab_size": 2048,
               "sources": [{"name": "medical", "max_docs": 400}, {"name": "wiki", "max_docs": 600},
                           {"name": "bbc_news", "max_docs": 150}, {"name": "python_stdlib", "max_docs": 30},
                           {"name": "shakespeare", "max_docs": 4}]},
    "task": {"name": "medical", "sources": ["medical"], "train_fraction": 0.3, "validation_fraction": 0.1, "test_fraction": 0.2},
    "embed": {"max_seq_length": 48, "batch_size": 32},
    "cluster": {"levels": [4, 16], "niter": 8},
    "model": {"size": "micro"},
    "train": {"max_steps": 150, "batch_size": 8, "lr": 3e-3, "warmup_steps": 10, "val_every": 150, "checkpoint_every": 150},
    "eval": {"batch_size": 16, "max_windows": 128},
}


def held_out_loss(results_dir, method: str, seed: int) -> float:
    cfg = build_run_config(CLAIM, {"results_dir": str(results_dir), "selection": {"method": method, "seed": seed},
                                   "train": {"seed": seed}})
    cache = StageCache(f"{cfg.results_dir}/cache")
    prepared = prepare(cache, cfg, need_clusters=True)
    assert "medical" not in set(prepared.stores.pool.domains)
    model = train_stage(cache, cfg, prepared, selection_stage(cache, cfg, prepared))
    return json.loads((eval_stage(cache, cfg, prepared, model).path / "metrics.json").read_text())["medical/loss"]


def main(results_dir: str) -> int:
    losses = {m: np.array([held_out_loss(results_dir, m, s) for s in SEEDS]) for m in ("uniform", "crisp")}
    gain = losses["uniform"].mean() - losses["crisp"].mean()
    spread = max(np.ptp(losses["uniform"]), np.ptp(losses["crisp"]))
    print({m: v.round(4).tolist() for m, v in losses.items()}, f"gain {gain:.4f} spread {spread:.4f}",
          "HOLDS" if gain > spread else "DOES NOT HOLD")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="central_claim-")))
