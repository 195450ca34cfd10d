"""One entry point for training data: a path (file or directory) or a ``synthetic:`` spec."""

from __future__ import annotations

import numpy as np

from mpiml.data import synthetic
from mpiml.data.shard import Shard, read_shard
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm
from mpiml.runtime.errors import ArgumentError, DataError


def load_shard(source: str, comm=None, fmt=None, n_features=None, label_column=0, delimiter=None,
               allow_empty=False) -> Shard:
    """This rank's shard of ``source``: a file, a directory of shards, or ``synthetic:KIND,...``."""
    if str(source).startswith("synthetic:"):
        error = None
        try:
            kind, options = synthetic.parse_spec(str(source))
        except ArgumentError as exc:
            error = exc
        raise_if_any(error, comm)
        c = private_comm(comm)
        lo, hi = synthetic.row_block(options["n"], c.Get_rank(), c.Get_size())
        if hi == lo and not allow_empty:
            raise_if_any(DataError(f"{options['n']} rows cannot fill {c.Get_size()} ranks", str(source)), comm)
        X, y = synthetic.generate(kind, options, lo, hi)
        return Shard(X, y, [str(source)], np.zeros(hi - lo, dtype=np.int64), np.arange(lo, hi) + 1)
    return read_shard(source, fmt, comm, n_features, label_column, delimiter, allow_empty)


def split_holdout(shard: Shard, fraction: float, seed: int, comm=None) -> tuple[Shard, Shard]:
    """``(train, test)``: each global row is held out by a fixed draw from ``seed`` (any p)."""
    c = private_comm(comm)
    offset = c.exscan(shard.n_rows) or 0
    mask = synthetic.holdout_mask(seed, offset, offset + shard.n_rows, fraction)
    train, test = shard.subset(np.flatnonzero(~mask)), shard.subset(np.flatnonzero(mask))
    empty = c.allgather(train.n_rows == 0)
    if any(empty):
        raise_if_any(DataError(f"rank {empty.index(True)} has no training rows left after holding out "
                               f"{fraction:.0%}; use fewer ranks or more data", shard.files[0] if shard.files else None),
                     comm)
    return train, test
