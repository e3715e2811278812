"""What a run cost: selection (embedding, clustering, auxiliary models) beside training, in FLOPs and device-hours.

The paper compares methods at equal cost, and counts the pool's embedding and tree once for every
task that shares the pool, so every point logs its cost in two parts:

    cost/pool_flops,      cost/pool_hours        task-independent: the pool's embedding, the tree fit,
                                                 the pool's assignment (shared by every task of the pool)
    cost/task_flops,      cost/task_hours        task-specific: the specialist embedding, the selection
                                                 (histogram, auxiliary LMs), coverage, training, fine-tuning
    cost/base_flops,      cost/base_hours        the base of continued pretraining (0 without one; also shared)
    cost/total_flops,     cost/total_hours       all three, as if the point ran alone

and, as before, `cost/selection_*` (the pool's part plus the selection's) and `cost/train_*`. With K
tasks sharing one pool, a task costs (pool + base) / K + task (analysis.figures: a figure's `tasks: K`).

Hours are measured wall seconds of the stages that produced this point's inputs, times the devices
they ran on, / 3600. FLOPs are counted where a model does the work (GPTs count their own; auxiliary
models report `aux_flops`) and estimated here for SBERT, k-means and the coverage's exact nearest
neighbours, whose libraries do not count them.
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


def nearest_neighbour_flops(n_reference: int, n_queries: int, dim: int = 384) -> float:
    """Exact inner-product search of every query against every reference row."""
    return float(2 * dim * n_reference * n_queries)


def point_costs(*, pool_flops: float, pool_hours: float, selection_flops: float, selection_hours: float,
                train_flops: float, train_hours: float, base_flops: float = 0.0, base_hours: float = 0.0) -> dict[str, float]:
    """The cost columns of a point (module docstring): `pool_*` the task-independent data stages,
    `selection_*` the task-specific ones and the selection, `train_*` training and fine-tuning. A
    continued-pretraining base is its own column; a study that shares it over K tasks divides it by K
    (analysis/split_plan.py)."""
    return {
        "cost/pool_flops": pool_flops,
        "cost/pool_hours": pool_hours,
        "cost/task_flops": selection_flops + train_flops,
        "cost/task_hours": selection_hours + train_hours,
        "cost/selection_flops": pool_flops + selection_flops,
        "cost/selection_hours": pool_hours + selection_hours,
        "cost/base_flops": base_flops,
        "cost/base_hours": base_hours,
        "cost/train_flops": train_flops,
        "cost/train_hours": train_hours,
        "cost/total_flops": pool_flops + selection_flops + base_flops + train_flops,
        "cost/total_hours": pool_hours + selection_hours + base_hours + train_hours,
    }
