"""Reproducible mode of ALS and iALS: bitwise the one-rank factors and metrics at every rank count (sub-communicators
inside one mpiexec: 1, p - 1 and p, see ``sub_sizes``; the runs at 2, 3, 5 and 6 cover 1..6), with the ratings
dealt in balanced and in uneven blocks."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree, sub_comm, sub_sizes

from mpiml.data.ratings import RatingsShard
from mpiml.data.synthetic_ratings import SyntheticSpec, synthetic_ratings
from mpiml.mf import ALS, ImplicitALS

WORLD = MPI.COMM_WORLD
SPEC = SyntheticSpec(users=30, items=20, ratings=360, rank=3, noise=0.1, seed=4)
MODELS = [
    lambda: ALS(rank=3, reg=0.05, iters=3, biases=True, seed=1, reproducible=True),
    lambda: ALS(rank=3, reg="auto", iters=2, auto_iters=1, reg_grid=[0.03, 0.1], seed=1, reproducible=True),
    lambda: ImplicitALS(rank=4, reg=2.0, iters=2, solver="cg", dtype="float32", seed=1, reproducible=True),
    lambda: ImplicitALS(rank=4, reg=2.0, iters=2, solver="cholesky", dtype="float64", seed=1, reproducible=True),
]


def part(shard, lo, hi):
    return RatingsShard(shard.users[lo:hi], shard.items[lo:hi], shard.values[lo:hi], shard.keys[lo:hi])


def bounds(n, size, uneven):
    if not uneven:
        return [n * r // size for r in range(size + 1)]
    return [0, *np.sort(np.random.default_rng(size).integers(0, n + 1, size - 1)).tolist(), n]


def outcome(model, train, test, comm):
    model.fit(train, comm=comm)
    metrics = model.evaluate(test, comm=comm, k=5, ranking=True)
    return model.user_factors_, model.item_factors_, model.history_[-1]["objective"], metrics


@pytest.mark.mpi
def test_als_and_ials_are_bitwise_the_same_at_every_rank_count():
    whole = synthetic_ratings(SPEC, 0, 1)
    n = len(whole)
    train, test = part(whole, 0, n - 60), part(whole, n - 60, n)
    problems = []
    for make in MODELS:
        want = outcome(make(), train, test, MPI.COMM_SELF)
        for size in sub_sizes(WORLD.size):
            for uneven in (False, True):
                with sub_comm(size) as sub:
                    if sub is None:
                        continue
                    b, c = bounds(len(train), size, uneven), bounds(len(test), size, uneven)
                    got = outcome(make(), part(train, b[sub.rank], b[sub.rank + 1]),
                                  part(test, c[sub.rank], c[sub.rank + 1]), sub)
                    same = (np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
                            and got[2] == want[2] and got[3] == want[3])
                    if not same:
                        problems.append((type(make()).__name__, size, uneven, float(np.abs(got[0] - want[0]).max()),
                                         got[2], want[2]))
    agree(WORLD, not problems, problems)
