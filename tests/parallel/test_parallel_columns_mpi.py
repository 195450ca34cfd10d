"""Grid shards read from svmlight, CSV and npz files equal blocks of the whole matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data import synthetic
from mpiml.data.columns import load_grid_shard
from mpiml.data.writers import csv_bytes, svmlight_bytes
from mpiml.parallel import GridComms, factorizations
from mpiml.parallel.grid import block
from mpiml.errors import DataError
from mpiml.runtime.files import save_npz_atomic

COMM = MPI.COMM_WORLD


def _write(path, fmt, X, y):
    if fmt == "svmlight":
        path.write_bytes(svmlight_bytes(X, y))
    elif fmt == "csv":
        path.write_bytes(csv_bytes(X, y))
    else:
        save_npz_atomic(path, X=X.toarray() if sp.issparse(X) else X, y=y)


@pytest.mark.mpi
@pytest.mark.parametrize("fmt,suffix", [("svmlight", ".svm"), ("csv", ".csv"), ("npz", ".npz")])
def test_grid_shards_are_blocks_of_the_whole_matrix(shared_tmp, fmt, suffix):
    kind, options = synthetic.parse_spec("synthetic:classification,n=37,d=11,density=0.4")
    X_all, y_all = synthetic.generate(kind, options, 0, 37)
    path = shared_tmp / f"data{suffix}"
    if COMM.rank == 0:
        _write(path, fmt, X_all, y_all)
    COMM.Barrier()
    dense = X_all.toarray()
    for rows, cols in factorizations(COMM.size):
        for split in ("features", "classes"):
            comms = GridComms.split(COMM, rows, cols)
            try:
                shard = load_grid_shard(str(path), comms, split, n_features=11 if fmt == "svmlight" else None)
                lines = shard.row_line - 1   # no header, no comments: line i holds row i
                lo, hi = block(11, cols, comms.col) if split == "features" else (0, 11)
                got = shard.X.toarray() if sp.issparse(shard.X) else shard.X
                ok = np.array_equal(got, dense[lines][:, lo:hi]) and np.array_equal(shard.y, y_all[lines])
                agree(COMM, ok, f"{fmt} {rows}x{cols} {split}: block differs")
                agree(COMM, np.array_equal(lines, np.arange(lines[0], lines[0] + len(lines))) if len(lines) else True,
                      "rows of a row group are not consecutive")
                mates = comms.row_comm.allgather(lines.tolist())
                agree(COMM, all(m == mates[0] for m in mates), "a row group disagrees on its rows")
                firsts = COMM.allgather(lines.tolist() if comms.col == 0 else [])
                agree(COMM, sorted(i for f in firsts for i in f) == list(range(37)), "rows lost or repeated")
            finally:
                comms.free()


@pytest.mark.mpi
def test_a_bad_line_is_the_same_data_error_on_every_rank(shared_tmp):
    path = shared_tmp / "bad.svm"
    if COMM.rank == 0:
        path.write_text("1 1:0.5 3:1\n0 2:1\n1 4:x\n0 1:2\n")
    COMM.Barrier()
    comms = GridComms.split(COMM, 1, COMM.size)
    try:
        with pytest.raises(DataError, match=re.escape(f"{path}:3:")) as info:
            load_grid_shard(str(path), comms, "features", allow_empty=True)
    finally:
        comms.free()
    message = str(info.value)
    agree(COMM, f"{path}:3" in message, message)
    agree(COMM, len(set(COMM.allgather(message))) == 1, "ranks raised different errors")
