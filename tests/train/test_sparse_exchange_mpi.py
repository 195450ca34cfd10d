"""Sync SGD with the sparse gradient exchange against the dense one (p = 2, 3, 5)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data import synthetic
from mpiml.sgd import Group, TrainConfig, make_model, train
from mpiml.train import sparse_exchange

COMM = MPI.COMM_WORLD
TWO_RANKS = pytest.mark.skipif(COMM.size == 1, reason="an exchange needs two ranks")


def _rows(spec):
    kind, options = synthetic.parse_spec(spec)
    lo, hi = synthetic.row_block(options["n"], COMM.rank, COMM.size)
    return synthetic.generate(kind, options, lo, hi), synthetic.generate(kind, options, 0, options["n"])


@pytest.mark.mpi
@TWO_RANKS
def test_sparse_exchange_equals_dense_and_moves_fewer_bytes():
    # the first training of a launch also loads the compiled kernels (free where other tests ran first)
    (X, y), _ = _rows("synthetic:classification,n=160,d=3000,density=0.003,seed=3")
    assert sp.issparse(X)
    model = make_model("logistic", X.shape[1], 2)
    config = TrainConfig(strategy="sync", epochs=1, batch_size=16, seed=5, momentum=0.9, accumulate=2)
    sparse, dense = (train(model, X, model.encode_labels(y), config, Group.from_comm(COMM, alg))
                     for alg in ("sparse", "native"))   # the dense one equals a serial run: test_sgd_training_mpi
    agree(COMM, np.allclose(sparse.theta, dense.theta, rtol=1e-9, atol=1e-12),
          float(np.max(np.abs(sparse.theta - dense.theta))))
    agree(COMM, all(np.array_equal(t, sparse.theta) for t in COMM.allgather(sparse.theta)), "models differ")
    agree(COMM, sparse.updates == dense.updates and 0 < sparse.bytes_moved < dense.bytes_moved / 3,
          (sparse.bytes_moved, dense.bytes_moved))


@pytest.mark.mpi
@TWO_RANKS
def test_auto_sends_sparse_gradients_only_where_the_model_predicts_it_cheaper():
    (X, y), _ = _rows("synthetic:classification,n=192,d=400000,density=0.0003,seed=2")
    model = make_model("logistic", X.shape[1], 2)
    config = TrainConfig(strategy="sync", epochs=1, batch_size=64, seed=1)
    wide = train(model, X, model.encode_labels(y), config, Group.from_comm(COMM, "auto"))
    dense_bytes = 2 * (COMM.size - 1) / COMM.size * 8 * (model.n_params + 1 + 1 + COMM.size) * wide.updates
    agree(COMM, wide.bytes_moved < dense_bytes / 10, (wide.bytes_moved, dense_bytes))
    (Xn, yn), _ = _rows("synthetic:classification,n=128,d=20,seed=2")
    narrow_model = make_model("logistic", 20, 2)
    narrow = train(narrow_model, Xn, narrow_model.encode_labels(yn), config, Group.from_comm(COMM, "auto"))
    dense_bytes = 2 * (COMM.size - 1) / COMM.size * 8 * (narrow_model.n_params + 1 + 1 + COMM.size)
    agree(COMM, narrow.bytes_moved == int(dense_bytes) * narrow.updates, (narrow.bytes_moved, dense_bytes))


def test_exchange_cost_prefers_sparse_for_wide_sparse_rows_only():
    sent, seconds, dense_sent, dense_seconds = sparse_exchange.exchange_cost(1 << 20, 1, 16, 415, 4, 6)
    assert seconds < dense_seconds / 2 and sent < dense_sent / 20
    sent, seconds, dense_sent, dense_seconds = sparse_exchange.exchange_cost(20, 1, 64, 20, 4, 6)
    assert seconds > dense_seconds
    assert sparse_exchange.expected_nonzeros(10, 2, 1000, 10) == pytest.approx(22.0)
    assert sparse_exchange.dense_algorithm("sparse") == "auto" and sparse_exchange.dense_algorithm("ring") == "ring"
