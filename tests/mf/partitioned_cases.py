"""Partitioned against replicated factors at one communicator's size (shared by the serial and MPI tests)."""

from __future__ import annotations

import numpy as np

from mpiml.data.ratings import RatingsShard
from mpiml.mf import ALS, DSGD, ImplicitALS, hot_rows, partitioned
from mpiml.mf.transport import gather_rows

# (set, model, parameters): the second set leaves ranks without user or item rows
CASES = [
    (0, ALS, dict(rank=3, reg=0.05, iters=2, biases=True, seed=7)),
    (0, ImplicitALS, dict(rank=3, reg=1.0, iters=2, dtype="float64", solver="cholesky")),
    (1, ALS, dict(rank=2, reg=0.1, iters=2, biases=False, weighted=False, seed=1)),
    (1, ImplicitALS, dict(rank=3, reg=1.0, iters=2, dtype="float64", solver="cg", reproducible=True)),
    (1, DSGD, dict(rank=3, reg=0.05, iters=2, lr=0.05, step="bold")),
]
SETS = ((60, 30, 600, 3), (3, 4, 6, 5))
# (set, hot-row thresholds (users, items)) forced on the first ALS case of the set: partial normal
# equations summed at the owner instead of routed rows (mpiml.mf.hot_rows), on one side or both
HOT = [(0, (2, 1)), (0, (hot_rows.NEVER, 3)), (1, (0, 0))]


def ratings(comm, users: int, items: int, n: int, seed: int) -> RatingsShard:
    """Seeded power-law ratings (ids 0..n-1, some unused), dealt round-robin; the last of several ranks gets none."""
    rng = np.random.default_rng(seed)
    u = np.minimum(rng.zipf(1.6, n) - 1, users - 1)
    i = np.minimum(rng.zipf(1.4, n) - 1, items - 1)
    pairs = np.unique(u * items + i)
    u, i = pairs // items, pairs % items
    v = rng.integers(1, 6, pairs.size).astype(np.float64)
    holders = max(comm.size - 1, 1)
    mine = np.arange(pairs.size) % holders == comm.rank
    return RatingsShard.from_arrays(u[mine], i[mine], v[mine], np.arange(pairs.size)[mine])


def mismatches(comm) -> list:
    """Every case whose partitioned fit differs from the replicated one (empty: all agree), on every rank.

    ALS and iALS are compared with replicated factors on one rank (each rank fits it alone: no
    collectives; replicated ALS gives the same factors at any p, as tests/mf/test_mf_mpi.py shows),
    DSGD, whose trajectory depends on p, with replicated factors at the same p.
    """
    from mpi4py import MPI

    bad = []
    for which, spec in enumerate(SETS):
        data = ratings(comm, *spec)
        runs = [(cls, kw, None) for cls, kw in (case[1:] for case in CASES if case[0] == which)]
        runs += [(ALS, next(c[2] for c in CASES if c[0] == which and c[1] is ALS), hot) for s, hot in HOT
                 if s == which]
        for cls, kw, hot in runs:
            partitioned.FORCE_THRESHOLDS = hot
            if cls is DSGD:
                a = cls(factors="replicated", **kw).fit(data, comm=comm)
            else:
                a = cls(factors="replicated", **kw).fit(ratings(MPI.COMM_SELF, *spec), comm=MPI.COMM_SELF)
            try:
                b = cls(factors="partitioned", **kw).fit(data, comm=comm)
            finally:
                partitioned.FORCE_THRESHOLDS = None
            p, q = gather_rows(b.user_block_, comm), gather_rows(b.item_block_, comm)
            ok = True
            if comm.rank == 0:
                ok = bool(np.allclose(p, a.user_factors_, rtol=1e-7, atol=1e-10)
                          and np.allclose(q, a.item_factors_, rtol=1e-7, atol=1e-10))
            ok = comm.bcast(ok, root=0)
            objectives = [[h["objective"] for h in m.history_] for m in (a, b)]
            ok = ok and np.allclose(*objectives, rtol=1e-9) and b.factors_layout_ == "partitioned"
            ok = ok and b.user_block_.shape[0] == b.user_bounds_[comm.rank + 1] - b.user_bounds_[comm.rank]
            ok = ok and b.local_rated_indptr_.size == b.user_block_.shape[0] + 1
            if not ok:
                bad.append((cls.__name__, kw, hot, objectives))
    return bad
