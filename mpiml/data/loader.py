"""One entry point for training data: a path (file or directory) or a ``synthetic:`` spec."""

from __future__ import annotations

import numpy as np

from mpiml.data import synthetic
from mpiml.data.shard import Shard, read_shard
from mpiml.errors import ArgumentError, DataError
from mpiml.runtime import partition
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm


SKLEARN_SETS = ("breast_cancer", "iris", "wine", "digits", "diabetes")


def _sklearn_rows(name: str, rank: int, size: int):
    """Rows of a data set bundled inside scikit-learn (no download): ``sklearn:breast_cancer`` etc."""
    if name not in SKLEARN_SETS:
        raise DataError(f"unknown bundled data set; choose from {', '.join(SKLEARN_SETS)}", f"sklearn:{name}")
    try:
        import sklearn.datasets
    except ImportError as exc:
        raise DataError("needs scikit-learn: pip install 'mpiml[sklearn]'", f"sklearn:{name}") from exc
    X, y = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
    lo, hi = partition.contiguous_block(len(y), size, rank)
    return np.ascontiguousarray(X[lo:hi], dtype=np.float64), y[lo:hi].astype(np.float64), lo, hi


def load_shard(source: str, comm=None, fmt=None, n_features=None, label_column=0, delimiter=None,
               allow_empty=False, zero_based="auto", header="auto") -> Shard:
    """This rank's shard of ``source``: a file, a directory of shards, ``synthetic:KIND,...``,
    or ``sklearn:NAME`` (a small data set bundled with scikit-learn, if installed).

    ``label_column``, ``zero_based``, ``header``: as :func:`mpiml.data.shard.read_shard`."""
    if str(source).startswith("sklearn:"):
        c = private_comm(comm)
        error = shard = None
        try:
            X, y, lo, hi = _sklearn_rows(str(source).split(":", 1)[1], c.Get_rank(), c.Get_size())
            shard = Shard(X, y, [str(source)], np.zeros(hi - lo, dtype=np.int64), np.arange(lo, hi) + 1)
        except DataError as exc:
            error = exc
        raise_if_any(error, comm)
        return shard
    if str(source).startswith("synthetic:"):
        error = None
        try:
            kind, options = synthetic.parse_spec(str(source))
        except ArgumentError as exc:
            error = exc
        raise_if_any(error, comm)
        c = private_comm(comm)
        lo, hi = partition.contiguous_block(options["n"], c.Get_size(), c.Get_rank())
        if hi == lo and not allow_empty:
            raise_if_any(DataError(f"{options['n']} rows cannot fill {c.Get_size()} ranks", str(source)), comm)
        X, y = synthetic.generate(kind, options, lo, hi)
        return Shard(X, y, [str(source)], np.zeros(hi - lo, dtype=np.int64), np.arange(lo, hi) + 1)
    return read_shard(source, fmt, comm, n_features, label_column, delimiter, allow_empty, zero_based,
                      header)


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
