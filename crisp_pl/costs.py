"""What a run cost: selection (embedding, clustering, auxiliary models) beside training, in FLOPs and device-hours.

The paper compares methods at equal cost, so every point logs

    cost/selection_flops, cost/selection_hours   the data stages and the selection stage it used
    cost/base_flops,      cost/base_hours        the base of continued pretraining (0 without one)
    cost/train_flops,     cost/train_hours       pretraining (or continued pretraining) plus fine-tuning
    cost/total_flops,     cost/total_hours

Hours are measured wall seconds of the stages that produced this point's inputs, times the devices
they ran on, / 3600; a stage shared by several points (one pool's embeddings serve every method)
is charged in full to each, as if each method ran alone. FLOPs are counted where a model does the
work (GPTs count their own; auxiliary models report `aux_flops`) and estimated here for SBERT and
k-means, whose libraries do not count them.
"""

from __future__ import annotations

from crisp_pl.config import ClusterConfig, EmbedConfig

# all-MiniLM-L6-v2: 6 layers, width 384, MLP 1536 (its config.json).
MINILM_LAYERS, MINILM_WIDTH, MINILM_MLP = 6, 384, 1536


def embedding_flops(n_windows: int, cfg: EmbedConfig, chunks_per_window: float = 1.0) -> float:
    """Forward FLOPs of MiniLM over `n_windows` windows of `max_seq_length` word pieces (an upper bound:
    shorter windows are padded no further than their batch). `mean_chunks` embeds several chunks a window.
    LSI: its projection, 2 x 384 FLOPs per nonzero TF-IDF term, at most a term per word piece; random: none."""
    pieces = cfg.max_seq_length
    if cfg.kind == "random":
        return 0.0
    if cfg.kind == "lsi":
        return float(n_windows * chunks_per_window * pieces * 2 * MINILM_WIDTH)
    matmul = 2 * MINILM_LAYERS * (4 * MINILM_WIDTH**2 + 2 * MINILM_WIDTH * MINILM_MLP)  # per piece
    attention = 2 * 2 * MINILM_LAYERS * pieces * MINILM_WIDTH  # QK^T and AV, per piece
    return float(n_windows * chunks_per_window * pieces * (matmul + attention))


def kmeans_flops(n_points: int, cfg: ClusterConfig, dim: int = 384) -> float:
    """Distance FLOPs of the hierarchical k-means: per level, `niter` Lloyd passes over each parent's
    sample (at most max_points_per_centroid per child), then one top-down assignment of every point."""
    total, above = 0.0, 1
    for k in cfg.levels:
        branch = k // above
        fitted = min(n_points, k * cfg.max_points_per_centroid)
        total += 2 * dim * branch * (cfg.niter * fitted + n_points)
        above = k
    return total


def point_costs(*, selection_flops: float, selection_hours: float, train_flops: float, train_hours: float,
                base_flops: float = 0.0, base_hours: float = 0.0) -> dict[str, float]:
    """The cost columns of a point. A continued-pretraining base is its own column, charged in full to
    each point; a study that shares it over K tasks divides it by K (analysis/split_plan.py)."""
    return {
        "cost/selection_flops": selection_flops,
        "cost/selection_hours": selection_hours,
        "cost/base_flops": base_flops,
        "cost/base_hours": base_hours,
        "cost/train_flops": train_flops,
        "cost/train_hours": train_hours,
        "cost/total_flops": selection_flops + base_flops + train_flops,
        "cost/total_hours": selection_hours + base_hours + train_hours,
    }
