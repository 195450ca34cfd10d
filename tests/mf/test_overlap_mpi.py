"""ALS and iALS with the factor exchange overlapped in chunks: bitwise the factors of the blocking path."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree

from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import ALS, ImplicitALS
from mpiml.mf.overlap import Accounts, chunk_bounds, chunk_rows
from mpiml.mf.partition import build_rows

SPEC = SyntheticSpec(users=60, items=35, ratings=900, rank=3, noise=0.1, seed=5)


def _same(comm, a, b):
    return agree(comm, a.dtype == b.dtype and np.array_equal(a, b), (a.dtype, b.dtype, np.abs(a - b).max()))


@pytest.mark.mpi
def test_overlapped_exchange_gives_the_blocking_factors():
    comm = MPI.COMM_WORLD
    shard = synthetic_ratings(SPEC, comm.rank, comm.size)
    cases = [(ALS, dict(rank=3, reg=0.05, iters=3, seed=7), (2, 40)),  # 40: more chunks than rows, some empty
             (ImplicitALS, dict(rank=4, reg=1.0, iters=2, seed=3), (3,))]  # cg, float32
    for cls, kwargs, counts in cases:
        plain = cls(**kwargs).fit(shard, comm=comm)
        for chunks in counts:
            over = cls(overlap=chunks, **kwargs).fit(shard, comm=comm)
            _same(comm, over.user_factors_, plain.user_factors_)
            _same(comm, over.item_factors_, plain.item_factors_)
            agree(comm, [h["objective"] for h in over.history_] == [h["objective"] for h in plain.history_])
            info = over.fit_info_
            if comm.size > 1:
                steps = 2 * (kwargs["iters"] - 1)
                agree(comm, info["overlap_chunks"] == chunks and info["overlapped_half_steps"] == steps,
                      info)
                share = info["comm_hidden_fraction"]
                agree(comm, share is None or 0.0 <= share <= 1.0, share)
            else:
                agree(comm, "overlap_chunks" not in info, info)


def test_chunks_cover_every_row_once():
    rng = np.random.default_rng(0)
    rows = build_rows(10, 17, rng.integers(10, 17, 40), rng.integers(0, 9, 40), rng.normal(size=40))
    cuts = chunk_bounds([7, 0, 3], 4)
    assert cuts.shape == (3, 5) and (cuts[:, 0] == 0).all() and cuts[:, -1].tolist() == [7, 0, 3]
    pieces = [chunk_rows(rows, int(cuts[0, k]), int(cuts[0, k + 1])) for k in range(4)]
    assert [(c.start, c.stop) for c in pieces] == [(10, 11), (11, 13), (13, 15), (15, 17)]
    assert np.array_equal(np.concatenate([c.cols for c in pieces]), rows.cols)
    assert np.array_equal(np.concatenate([c.row_ids() for c in pieces]), rows.row_ids())
    accounts = Accounts()
    assert accounts.hidden_fraction() is None
    accounts.exposed, accounts.overlapped, accounts.blocking, accounts.blocked = 2.0, 4, 2.0, 2
    assert accounts.hidden_fraction() == 0.5  # 0.5 s exposed per overlapped half-step against 1 s blocking
    accounts.exposed_wait, accounts.blocking_wait = 1.5, 1.0
    assert accounts.hidden_fraction("comm") == 0.75  # transfer: 0.125 s against 0.5 s
    accounts.exposed = 10.0
    assert accounts.hidden_fraction() == 0.0
