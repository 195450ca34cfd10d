"""One user seed; independent, reproducible random streams per rank and purpose."""

from __future__ import annotations

import numpy as np


def rank_generator(seed: int, rank: int, size: int, purpose: int = 0) -> np.random.Generator:
    """The generator of ``rank`` among ``size`` for ``purpose``: the same on every run."""
    children = np.random.SeedSequence([int(seed), int(purpose)]).spawn(size)
    return np.random.default_rng(children[rank])

