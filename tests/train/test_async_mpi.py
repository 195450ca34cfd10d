"""Asynchronous (bounded-staleness) SGD and backup workers, with and without injected stragglers.

Oracles: the optimum of the penalized logistic objective by scipy's L-BFGS-B (convex, so
every strategy must end near it), a numpy minibatch SGD (``async`` on one rank is plain
SGD), and numpy sums for the backup reweighting. Under mpiexec (p = 2, 3, 5 by
test_under_mpiexec) and serially (p = 1). Every run must end on every rank: a hang fails the
harness's bounded mpiexec.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpi_helpers import agree, shared_tmp  # noqa: F401  (a fixture)
from scipy.optimize import minimize
from scipy.special import expit

from mpiml.data import synthetic
from mpiml.errors import ArgumentError
from mpiml.runtime import stragglers
from mpiml.sgd import LinearModel
from mpiml.train import asynchronous, backup, plan

COMM = MPI.COMM_WORLD
SPEC = "synthetic:classification,n=240,d=6,separation=2"
ALPHA = 1e-2
SGD = dict(epochs=8, batch_size=16, lr=0.5, schedule="cosine", seed=3)
# Tolerances, relative to the optimum's objective: sync ends within 4e-5 here; async within
# 1.3e-3 at p = 2..5 with a 20x straggler (measured); backup's rows from a persistently slow
# rank weigh about 1/f as much (it contributes to one update in f), which moves its optimum.
ASYNC_GAP, BACKUP_GAP = 5e-3, 5e-2


def _data(comm=COMM):
    kind, options = synthetic.parse_spec(SPEC)
    n = options["n"]
    lo, hi = synthetic.row_block(n, comm.rank, comm.size)
    return synthetic.generate(kind, options, lo, hi), synthetic.generate(kind, options, 0, n)


def _optimum(X, y):
    """(objective, theta) at the minimum of mean log-loss + alpha/2 |w|^2, by scipy to a 1e-12 gradient."""
    A = np.hstack([X, np.ones((len(y), 1))])
    reg = np.r_[np.full(X.shape[1], ALPHA), 0.0]

    def objective(t):
        s = A @ t
        return np.mean(np.logaddexp(0, s) - y * s) + 0.5 * np.sum(reg * t * t), A.T @ (expit(s) - y) / len(y) + reg * t

    best = minimize(objective, np.zeros(A.shape[1]), jac=True, method="L-BFGS-B",
                    options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000})
    return best.fun, best.x


def _fit(strategy, X, y, comm=COMM, **settings):
    return LinearModel("logistic", strategy, comm=comm, standardize=False, alpha=ALPHA,
                       **{**SGD, **settings}).fit(X, y)


def _gap(est, best):
    return (est.history_[-1]["train_loss"] - best) / best


@pytest.mark.mpi
def test_async_and_backup_reach_the_optimum_with_and_without_a_straggler():
    (X, y), (X_all, y_all) = _data()
    best, _ = _optimum(X_all, y_all)
    p = COMM.size
    cases = [("async", dict(staleness=2), None), ("async", dict(staleness=1), 3.0), ("sync", dict(backup=1), 3.0)]
    try:
        for strategy, settings, factor in cases:
            if settings.get("backup", 0) >= p:   # p = 1 (the harness's collectives count): no backup to have
                continue
            stragglers.install({p - 1: factor} if factor else {})
            est = _fit(strategy, X, y, **settings)
            where = f"{strategy} {settings} at p={p}, rank {p - 1} {factor or 1}x slower"
            gap = _gap(est, best)
            tol = BACKUP_GAP if "backup" in settings else ASYNC_GAP
            agree(COMM, 0 <= gap <= tol or abs(gap) <= 1e-12, f"{where}: objective {gap:.2e} above the optimum")
            agree(COMM, all(np.array_equal(t, est.theta_) for t in COMM.allgather(est.theta_)),
                  f"{where}: ranks end with different models")
            if strategy == "async":
                seen = asynchronous.LAST_RUN
                agree(COMM, seen["max_spread"] <= settings["staleness"],
                      f"{where}: clocks {seen['max_spread']} apart, bound {settings['staleness']}")
                planned = plan.sync_steps(len(y_all), SGD["batch_size"]) * SGD["epochs"]
                done = est.result_.updates
                agree(COMM, planned <= done < planned + p * SGD["epochs"],
                      f"{where}: {done} updates for {planned} planned")
    finally:
        stragglers.install(None)


@pytest.mark.mpi
def test_async_resumes_from_a_checkpoint_and_still_reaches_the_optimum(shared_tmp):
    (X, y), (X_all, y_all) = _data()
    best, _ = _optimum(X_all, y_all)
    settings = dict(staleness=3, checkpoint_every=30)
    part = LinearModel("logistic", "async", comm=COMM, standardize=False, alpha=ALPHA, checkpoint_dir=shared_tmp,
                       stop_at_update=50, **SGD, **settings).fit(X, y)
    agree(COMM, part.result_.interrupted and 50 <= part.result_.updates < 50 + COMM.size,
          f"stopped after {part.result_.updates} updates")
    rest = LinearModel("logistic", "async", comm=COMM, standardize=False, alpha=ALPHA, checkpoint_dir=shared_tmp,
                       resume=True, **SGD, **settings).fit(X, y)
    agree(COMM, rest.result_.resumed_from == part.result_.updates,
          f"resumed from {rest.result_.resumed_from}, stopped at {part.result_.updates}")
    agree(COMM, not rest.result_.interrupted and len(rest.history_) == SGD["epochs"], rest.history_)
    gap = _gap(rest, best)
    agree(COMM, 0 <= gap <= ASYNC_GAP, f"resumed async: objective {gap:.2e} above the optimum")
    agree(COMM, all(np.array_equal(t, rest.theta_) for t in COMM.allgather(rest.theta_)), "ranks differ")


@pytest.mark.mpi
def test_backup_needs_fewer_backups_than_ranks_and_async_data_parallelism():
    (X, y), _ = _data()
    cases = [("sync", dict(backup=COMM.size), {})]
    if COMM.size > 1:   # a grid with more than one column
        cases.append(("async", {}, dict(parallel="model", grid=f"1x{COMM.size}")))
    for strategy, settings, layout in cases:
        with pytest.raises(ArgumentError):
            LinearModel("logistic", strategy, comm=COMM, standardize=False, **layout, **SGD, **settings).fit(X, y)


@pytest.mark.mpi
def test_a_rank_failing_mid_run_ends_every_rank(monkeypatch):
    """One rank raises in its 5th batch: the others learn it from the window and end too (no hang)."""
    from mpiml.train import loop

    (X, y), _ = _data()
    calls = [0]
    original = loop.Run.batch

    def failing(self, row_sets, grad):
        calls[0] += 1
        if COMM.rank == COMM.size - 1 and calls[0] == 5:
            raise RuntimeError("injected failure")
        return original(self, row_sets, grad)

    monkeypatch.setattr(loop.Run, "batch", failing)
    error = None
    try:
        _fit("async", X, y, staleness=2)
    except Exception as exc:   # noqa: BLE001  (each rank's own error)
        error = exc
    agree(COMM, error is not None, f"rank {COMM.rank} ended without an error")


def _plain_sgd(X, y, epochs, batch, lr, seed):
    """Minibatch SGD on mean log-loss + alpha/2 |w|^2 over plan.local_rows (one rank's own order), constant lr."""
    theta = np.zeros(X.shape[1] + 1)
    for epoch in range(epochs):
        order = plan.local_order(seed, epoch, 0, 1, len(y))
        for step in range(plan.sync_steps(len(y), batch)):
            rows = plan.local_rows(order, step, batch)
            w, b = theta[:-1], theta[-1]
            r = expit(X[rows] @ w + b) - y[rows]
            theta = theta - lr * np.r_[X[rows].T @ r / len(rows) + ALPHA * w, r.mean()]
    return theta


def test_async_on_one_rank_is_plain_sgd_and_reaches_the_optimum():
    (X, y), _ = _data(MPI.COMM_SELF)
    est = _fit("async", X, y, comm=MPI.COMM_SELF, schedule="constant", epochs=3, lr=0.3)
    reference = _plain_sgd(X, y, 3, SGD["batch_size"], 0.3, SGD["seed"])
    assert np.max(np.abs(est.theta_ - reference)) <= 1e-10 * np.abs(reference).max()
    best, _ = _optimum(X, y)
    try:
        stragglers.install({0: 3.0})
        est = _fit("async", X, y, comm=MPI.COMM_SELF, epochs=6)
    finally:
        stragglers.install(None)
    assert 0 <= _gap(est, best) <= ASYNC_GAP
    assert asynchronous.LAST_RUN["max_spread"] == 0
    with pytest.raises(ArgumentError, match="backup"):
        _fit("sync", X, y, comm=MPI.COMM_SELF, backup=1)


def test_backup_reweights_by_the_rows_that_arrived():
    rng = np.random.default_rng(0)
    n = 5
    parts = []
    for rows, update in ((16, 7), (5, 7), (0, 6)):
        part = np.zeros(n + backup.EXTRA)
        part[:n + 1] = rng.standard_normal(n + 1) * rows
        part[n + backup.ROWS], part[n + backup.UPDATE] = rows, update
        part[n + backup.VOTE] = float(update == 6)
        parts.append(part)
    out = backup.combine(parts, n)
    grads = np.array([q[:n] for q in parts])
    np.testing.assert_allclose(out[:n], grads.sum(axis=0) / 21)
    np.testing.assert_allclose(out[n + backup.LOSS], sum(q[n] for q in parts) / 21)
    assert out[n + backup.ROWS] == 21 and out[n + backup.UPDATE] == 7 and out[n + backup.VOTE] == 1.0
