"""Seeds of a selection's own random parts (auxiliary models, window draws), derived from `selection.seed`."""

import numpy as np


def child_seed(seed: int, role: int) -> int:
    """A distinct 32-bit seed per role, derived from the selection seed."""
    return int(np.random.SeedSequence([seed, role]).generate_state(1)[0])
