"""Which process of a multi-process run this is, from the launcher's environment.

Multi-GPU and multi-node runs are started by an external launcher that runs the same `crisp`
command in every process (`torchrun --nproc_per_node=8 -m crisp_pl.cli study run NAME ...`; under
SLURM, `srun torchrun ...`), each with `RANK` and `WORLD_SIZE` set (not SLURM's own variables: an
allocation's SLURM_NTASKS is set for a plain `python` too); Lightning's DDP strategy reads the same environment and
joins them, so no process is spawned from inside a study. Rank 0 builds every stage that one
process computes (k-means, selection, evaluation) and alone writes to MLflow; the others wait for those
stages in the cache and join the stages that train or embed (crisp_pl.cache: `collective`): each rank
embeds its share of the embedding shards.
"""

from __future__ import annotations

import os


def global_rank() -> int:
    """This process's rank over all nodes (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes over all nodes (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_worker() -> bool:
    """A process of rank > 0: it computes only its share of the training stages."""
    return global_rank() > 0
