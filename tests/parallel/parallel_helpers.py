"""Shared pieces of the grid tests: synthetic row blocks and a grid run of one case."""

from __future__ import annotations

import numpy as np

from mpiml.data import synthetic
from mpiml.data.columns import to_grid
from mpiml.data.shard import Shard
from mpiml.parallel import GridComms, make_part, train_grid


def rank_rows(spec, comm):
    """This rank's consecutive block of a synthetic set, and the whole set."""
    kind, options = synthetic.parse_spec(spec)
    lo, hi = synthetic.row_block(options["n"], comm.rank, comm.size)
    return synthetic.generate(kind, options, lo, hi), synthetic.generate(kind, options, 0, options["n"])


def grid_train(model, X, y, config, comm, rows, cols, split, **kwargs):
    """Train on a rows x cols grid of ``comm`` from this rank's row block ``(X, y)`` (y encoded)."""
    comms = GridComms.split(comm, rows, cols)
    try:
        part = make_part(split, model.n_features, model.k, cols, comms.col)
        mine = to_grid(Shard(X, y), comms, split)
        return train_grid(model, part, mine.X, mine.y.astype(y.dtype), config, comms, **kwargs)
    finally:
        comms.free()


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
