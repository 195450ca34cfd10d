"""Shards for model-parallel grids: the rows of a row group, cut into feature blocks.

Each rank first reads its own ``1/p`` of the rows with every feature (the byte-range and
row-block readers of :mod:`mpiml.data.shard`; ranks ``r C .. r C + C - 1`` read
consecutive parts, so together they hold the consecutive block of rows of row group
``r``). Then the ``C`` ranks of the row group swap column blocks with one all-to-all:
afterwards rank ``(r, c)`` holds the rows of row group ``r`` restricted to feature
block ``c``. No rank ever holds more than its ``1/p`` of the matrix plus its final
block; no rank reads or holds the whole data set. For a classes split the row group
instead gathers the full rows (every class needs every feature).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpiml.data.loader import load_shard
from mpiml.data.shard import Shard
from mpiml.runtime.partition import contiguous_block


def column_slice(X, lo: int, hi: int):
    """Columns ``[lo, hi)`` of a dense array or CSR matrix, as a C-contiguous array or CSR."""
    if sp.issparse(X):
        return sp.csr_matrix(X[:, lo:hi])
    return np.ascontiguousarray(X[:, lo:hi])


def _stack(blocks):
    if any(sp.issparse(b) for b in blocks):
        return sp.vstack([sp.csr_matrix(b) for b in blocks], format="csr")
    return np.concatenate(blocks)


def to_grid(shard: Shard, comms, split: str = "features") -> Shard:
    """This rank's grid shard from the row blocks every rank read (collective over each row group).

    Parameters
    ----------
    shard : Shard
        This rank's consecutive block of the global rows, with every feature.
    comms : GridComms
        The grid (its ``row_comm`` links the ranks of a row group, in column order).
    split : str
        ``"features"``: keep feature block ``comms.col`` of ``comms.cols``; ``"classes"``:
        keep every feature.

    Returns
    -------
    Shard
        The rows of this rank's row group, in global order, and their origins.
    """
    d = shard.X.shape[1]
    if comms.row_comm is None or comms.cols == 1:
        lo, hi = contiguous_block(d, comms.cols, comms.col) if split == "features" else (0, d)
        return Shard(column_slice(shard.X, lo, hi), shard.y, shard.files, shard.row_file, shard.row_line)
    from mpiml.runtime.comm import private_comm

    comm = private_comm(comms.row_comm)
    if split == "features":
        pieces = comm.alltoall([column_slice(shard.X, *contiguous_block(d, comms.cols, j))
                                for j in range(comms.cols)])
    else:
        pieces = comm.allgather(shard.X)
    meta = comm.allgather((shard.y, shard.row_file, shard.row_line))
    row_file = None if meta[0][1] is None else np.concatenate([m[1] for m in meta])
    row_line = None if meta[0][2] is None else np.concatenate([m[2] for m in meta])
    return Shard(_stack(pieces), np.concatenate([m[0] for m in meta]), shard.files, row_file, row_line)


def load_grid_shard(source, comms, split: str = "features", **options) -> Shard:
    """:func:`mpiml.data.load_shard` of ``source`` (any format, ``synthetic:`` too), laid out by :func:`to_grid`."""
    return to_grid(load_shard(source, comms.world, **options), comms, split)
