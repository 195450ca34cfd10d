"""Reproducible mode: sync SGD and L-BFGS give bitwise the one-rank model at every rank count.

Sizes run on sub-communicators of one mpiexec (1, p - 1 and p, see ``mpi_helpers.sub_sizes``: the runs at
2, 3, 5 and 6 ranks cover every size 1..6), with balanced and uneven (some empty) row blocks, dense and
sparse, float64 and float32; the oracle is the run on one rank (COMM_SELF), and the ordinary mode must still match it
to rounding.
A checkpoint written at 3 ranks and resumed at 5 (at p >= 5; smaller p: the two largest sizes) ends
on the uninterrupted one-rank model.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from mpi_helpers import agree, sub_comm, sub_sizes

from mpiml.sgd import LinearModel

WORLD = MPI.COMM_WORLD
CASES = [
    # model, strategy, settings
    ("logistic", "sync", dict(epochs=2, batch_size=16, accumulate=2, optimizer="adam", lr=0.05)),
    ("softmax", "sync", dict(epochs=1, batch_size=24, lr=0.1, momentum=0.5)),
    ("logistic", "lbfgs", dict(max_iter=30)),
    ("linear", "lbfgs", dict(max_iter=20, alpha=1e-2)),
]


def data(sparse: bool, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((90, 7)) * rng.uniform(0.1, 10.0, 7)
    if sparse:
        X = X * (rng.random(X.shape) < 0.4)
    y3 = np.argmax(X[:, :3] + rng.standard_normal((90, 3)), axis=1).astype(np.float64)
    X = X.astype(dtype)
    return (sp.csr_matrix(X) if sparse else X), y3


def blocks(n, size, uneven):
    if not uneven:
        bounds = [n * r // size for r in range(size + 1)]
    else:   # the rng is seeded by the size: the same on every rank
        cuts = np.sort(np.random.default_rng(size).integers(0, n + 1, size - 1))
        bounds = [0, *cuts.tolist(), n]
    return [(bounds[r], bounds[r + 1]) for r in range(size)]


def labels(model, y3):
    return y3 if model == "softmax" else (y3 if model == "linear" else (y3 > 0).astype(np.float64))


def fit(model, strategy, settings, X, y, comm, **extra):
    est = LinearModel(model, strategy, comm=comm, reproducible=True, seed=3, **settings, **extra)
    return est.fit(X, y)


@pytest.mark.mpi
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_final_model_is_bitwise_the_same_at_every_rank_count(sparse, dtype):
    X, y3 = data(sparse, dtype)
    problems = []
    for model, strategy, settings in CASES:
        y = labels(model, y3)
        oracle = fit(model, strategy, settings, X, y, MPI.COMM_SELF)
        ordinary = LinearModel(model, strategy, comm=MPI.COMM_SELF, seed=3, **settings).fit(X, y)
        if not np.allclose(ordinary.theta_, oracle.theta_, rtol=1e-6, atol=1e-8):
            problems.append((model, strategy, "differs from the ordinary mode beyond rounding"))
        for size in sub_sizes(WORLD.size):
            for uneven in (False, True):
                with sub_comm(size) as sub:
                    if sub is None:
                        continue
                    lo, hi = blocks(X.shape[0], size, uneven)[sub.rank]
                    got = fit(model, strategy, settings, X[lo:hi], y[lo:hi], sub)
                    if not np.array_equal(got.theta_, oracle.theta_):
                        problems.append((model, strategy, size, uneven,
                                         float(np.abs(got.theta_ - oracle.theta_).max())))
                    last, want = got.history_[-1], oracle.history_[-1]
                    if any(last.get(k) != want.get(k) for k in ("train_loss", "train_accuracy")):
                        problems.append((model, strategy, size, "metrics"))
    agree(WORLD, not problems, problems)


@pytest.mark.mpi
def test_checkpoint_from_3_ranks_resumed_at_5_ends_on_the_one_rank_model(shared_tmp):
    X, y3 = data(False, np.float64, seed=1)
    y = (y3 > 0).astype(np.float64)
    settings = dict(epochs=3, batch_size=8, optimizer="adam", lr=0.05, checkpoint_every=5)
    oracle = fit("logistic", "sync", settings, X, y, MPI.COMM_SELF)
    first, second = (3, 5) if WORLD.size >= 5 else (max(WORLD.size - 1, 1), WORLD.size)
    directory = str(shared_tmp / "ckpt")
    problems = []
    with sub_comm(first) as sub:
        if sub is not None:
            lo, hi = blocks(X.shape[0], first, False)[sub.rank]
            part = fit("logistic", "sync", settings, X[lo:hi], y[lo:hi], sub, checkpoint_dir=directory,
                       stop_at_update=17)
            if not part.result_.interrupted:
                problems.append("the first part was not interrupted")
    with sub_comm(second) as sub:
        if sub is not None:
            lo, hi = blocks(X.shape[0], second, True)[sub.rank]
            rest = fit("logistic", "sync", settings, X[lo:hi], y[lo:hi], sub, checkpoint_dir=directory, resume=True)
            if rest.result_.resumed_from != 17 or not np.array_equal(rest.theta_, oracle.theta_):
                problems.append((rest.result_.resumed_from, float(np.abs(rest.theta_ - oracle.theta_).max())))
    agree(WORLD, not problems, problems)


@pytest.mark.mpi
def test_counts_and_maxima_ride_in_one_sum(monkeypatch):
    """global_counts against comm's own reductions, with the maxima carried and (over the limit) not."""
    from mpiml.train import reproducible
    from mpiml.train.group import Group

    group = Group.from_comm(WORLD)
    rng = np.random.default_rng(WORLD.rank)
    X = sp.random(5 + 3 * WORLD.rank, 11, density=0.3, format="csr", random_state=WORLD.rank)
    test = (np.zeros((WORLD.rank, 11)), np.zeros(WORLD.rank))
    tops = np.abs(rng.standard_normal(12)) * 10.0 ** rng.integers(-300, 300, 12)
    tops[WORLD.rank % 12] = 0.0
    problems = []
    for limit in (reproducible.MAX_CARRIED, 0):
        monkeypatch.setattr(reproducible, "MAX_CARRIED", limit)
        offset, rows, held, column, maxima = reproducible.global_counts(group, X, test, tops.copy())
        want_rows = WORLD.allgather(X.shape[0])
        columns = np.bincount(X.indices, minlength=11).astype(np.float64)
        WORLD.Allreduce(MPI.IN_PLACE, columns, op=MPI.SUM)
        most = np.empty_like(tops)
        WORLD.Allreduce(tops, most, op=MPI.MAX)
        if (offset, rows, held, column) != (sum(want_rows[:WORLD.rank]), sum(want_rows),
                                             WORLD.allreduce(WORLD.rank), int(columns.max())):
            problems.append((limit, offset, rows, held, column))
        if limit and not np.array_equal(maxima, most):
            problems.append((limit, "maxima"))
        if not limit and maxima is not None:
            problems.append((limit, "carried over the limit"))
    agree(WORLD, not problems, f"rank {WORLD.rank}: {problems}")
