"""The contract of the one training loop: every strategy, under both trainers, against independent references.

Trainers: ``data`` (every rank the whole model) and ``grid`` (the model split over grid
columns: a hybrid R x C grid where p has one, else 1 x p), both through
:class:`mpiml.sgd.LinearModel`. References, in numpy on the whole data set:

- ``sync``: minibatch SGD over the global batches of :func:`mpiml.train.plan.sync_plan`;
- ``local``/``oneshot``: one model per replica (a rank of the data trainer, a row group of
  the grid), stepping over :func:`mpiml.train.plan.local_rows`, averaged every ``sync_every``
  updates or once at the end;
- ``lbfgs``: the optimum found by scipy's L-BFGS-B run to a much tighter tolerance.

Also: a stop request on one rank stops every rank after the same update, under both trainers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree
from oracle import sync_logistic_sgd
from scipy.optimize import minimize
from scipy.special import expit

from mpiml.data import synthetic
from mpiml.parallel import factorizations
from mpiml.sgd import LinearModel
from mpiml.train import plan

COMM = MPI.COMM_WORLD
SPEC = "synthetic:classification,n=150,d=6,separation=2"
ALPHA = 1e-3
SGD = dict(epochs=2, batch_size=16, lr=0.3, seed=3)


def _grid():
    """The grid trainer's grid for this p: a hybrid one (several replicas) where p allows, else 1 x p."""
    hybrid = [(r, c) for r, c in factorizations(COMM.size) if r > 1 and c > 1]
    return hybrid[0] if hybrid else (1, COMM.size)


def _replica_rows(trainer, n):
    """``[(lo, hi), ...]``: the global rows of each replica (a rank; a row group of the grid)."""
    if trainer == "data":
        return [synthetic.row_block(n, r, COMM.size) for r in range(COMM.size)]
    rows, cols = _grid()
    return [(synthetic.row_block(n, g * cols, COMM.size)[0], synthetic.row_block(n, g * cols + cols - 1,
                                                                                 COMM.size)[1])
            for g in range(rows)]


def _fit(trainer, strategy, X, y, **settings):
    layout = {} if trainer == "data" else dict(parallel="auto", grid="{}x{}".format(*_grid()), split="features")
    return LinearModel("logistic", strategy, comm=COMM, standardize=False, alpha=ALPHA, **layout,
                       **settings).fit(X, y)


def _step(theta, X, y, rows):
    """The mean gradient of the penalized logistic loss over ``rows``."""
    w, b = theta[:-1], theta[-1]
    r = expit(X[rows] @ w + b) - y[rows]
    return np.r_[X[rows].T @ r / len(rows) + ALPHA * w, r.mean()]


def _sync_reference(X, y):
    return sync_logistic_sgd(X, y, SGD["epochs"], SGD["batch_size"], SGD["lr"], ALPHA, SGD["seed"])


def _local_reference(X, y, replicas, every):
    n, batch, R = len(y), SGD["batch_size"], len(replicas)
    thetas = [np.zeros(X.shape[1] + 1) for _ in replicas]
    t = 0
    for epoch in range(SGD["epochs"]):
        orders = [plan.local_order(SGD["seed"], epoch, r, R, hi - lo) for r, (lo, hi) in enumerate(replicas)]
        for step in range(max(math.ceil(n / (R * batch)), 1)):
            for r, (lo, hi) in enumerate(replicas):
                thetas[r] = thetas[r] - SGD["lr"] * _step(thetas[r], X[lo:hi], y[lo:hi],
                                                          plan.local_rows(orders[r], step, batch))
            t += 1
            if every and t % every == 0:
                thetas = [np.mean(thetas, axis=0)] * R
    return np.mean(thetas, axis=0)


def _optimum(X, y):
    """The penalized mean log-loss at its minimum, by scipy's L-BFGS-B run to a 1e-12 gradient."""
    A = np.hstack([X, np.ones((len(y), 1))])
    reg = np.r_[np.full(X.shape[1], ALPHA), 0.0]

    def objective(t):
        s = A @ t
        value = np.mean(np.logaddexp(0, s) - y * s) + 0.5 * np.sum(reg * t * t)
        return value, A.T @ (expit(s) - y) / len(y) + reg * t

    return minimize(objective, np.zeros(A.shape[1]), jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000}).fun


def _data():
    kind, options = synthetic.parse_spec(SPEC)
    n = options["n"]
    lo, hi = synthetic.row_block(n, COMM.rank, COMM.size)
    return synthetic.generate(kind, options, lo, hi), synthetic.generate(kind, options, 0, n)


@pytest.mark.mpi
@pytest.mark.parametrize("trainer", ["data", "grid"])
@pytest.mark.parametrize("strategy", ["sync", "local", "oneshot", "lbfgs"])
def test_every_strategy_meets_its_reference_under_both_trainers(trainer, strategy):
    (X, y), (X_all, y_all) = _data()
    where = f"{trainer} {strategy} at p={COMM.size}"
    if strategy == "lbfgs":
        est = _fit(trainer, strategy, X, y, tol=1e-10)
        best, ours = _optimum(X_all, y_all), est.history_[-1]["train_loss"]
        agree(COMM, abs(ours - best) <= 1e-7 * abs(best), f"{where}: objective {ours} vs {best}")
    else:
        settings = dict(SGD, sync_every=3) if strategy == "local" else SGD
        est = _fit(trainer, strategy, X, y, **settings)
        if strategy == "sync":
            reference = _sync_reference(X_all, y_all)
        else:
            reference = _local_reference(X_all, y_all, _replica_rows(trainer, len(y_all)),
                                         3 if strategy == "local" else None)
        diff = float(np.max(np.abs(est.theta_ - reference)))
        agree(COMM, diff <= 1e-10 * max(1.0, float(np.abs(reference).max())), f"{where}: max diff {diff}")
    agree(COMM, all(np.array_equal(t, est.theta_) for t in COMM.allgather(est.theta_)), f"{where}: ranks differ")
    grid = "{}x{}".format(*_grid()) if trainer == "grid" else f"{COMM.size}x1"
    agree(COMM, est.layout_["grid"] == grid, (est.layout_, grid))


@pytest.mark.mpi
@pytest.mark.parametrize("trainer", ["data", "grid"])
@pytest.mark.parametrize("strategy", ["sync", "local", "oneshot"])
def test_a_stop_request_on_one_rank_stops_every_rank_after_the_same_update(trainer, strategy):
    (X, y), _ = _data()
    calls = []

    def stop_requested():   # the last rank is asked to stop from its 4th look on
        calls.append(1)
        return COMM.rank == COMM.size - 1 and len(calls) >= 4

    est = _fit(trainer, strategy, X, y, **dict(SGD, epochs=4), stop_requested=stop_requested,
               **(dict(sync_every=2) if strategy == "local" else {}))
    result = est.result_
    updates = COMM.allgather(result.updates)
    agree(COMM, result.interrupted and len(set(updates)) == 1, (trainer, strategy, result.interrupted, updates))
    replicas = len(_replica_rows(trainer, 150))
    per_epoch = math.ceil(150 / SGD["batch_size"]) if strategy == "sync" else \
        max(math.ceil(150 / (replicas * SGD["batch_size"])), 1)
    if strategy == "local":   # at a model average, or at the end of an epoch (its evaluation carries votes too)
        agree(COMM, result.updates % 2 == 0 or result.updates % per_epoch == 0, result.updates)
    if strategy == "oneshot":   # at the end of an epoch
        agree(COMM, result.updates % per_epoch == 0 and result.updates < 4 * per_epoch, result.updates)
    agree(COMM, result.updates < 4 * per_epoch, (result.updates, per_epoch))
