"""Distributed training against serial runs, scipy's optimum, and uninterrupted runs (p = 1..5)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from mpi_helpers import agree
from scipy.optimize import minimize
from scipy.special import expit

from mpiml.data import synthetic
from mpiml.runtime.checkpoint import read_checkpoint
from mpiml.errors import DivergenceError
from mpiml.sgd import Group, LinearModel, TrainConfig, make_model, train

COMM = MPI.COMM_WORLD


def block(spec, n=None, start=0):
    """This rank's consecutive block of rows [start, start + n) of a synthetic set, and all of them."""
    kind, options = synthetic.parse_spec(spec)
    n = n or options["n"]
    lo, hi = synthetic.row_block(n, COMM.rank, COMM.size)
    return synthetic.generate(kind, options, start + lo, start + hi), synthetic.generate(kind, options, start,
                                                                                         start + n)


SYNC_CASES = [
    ("logistic", "synthetic:classification,n=700,d=6", dict(momentum=0.9, nesterov=True)),
    ("softmax", "synthetic:classification,n=500,d=12,classes=3,density=0.3",
     dict(optimizer="adam", lr=0.05, accumulate=2, schedule="cosine")),
    ("svm", "synthetic:classification,n=600,d=5", dict(optimizer="adagrad", alpha=0.01, l1_ratio=0.5)),
    ("linear", "synthetic:regression,n=600,d=5", dict(lr=0.05, schedule="inverse", lr_decay=0.01)),
]


@pytest.mark.mpi
@pytest.mark.parametrize("name,spec,settings", SYNC_CASES)
def test_sync_equals_serial(name, spec, settings):
    (X, y), (X_all, y_all) = block(spec)
    classes = 3 if name == "softmax" else 2
    model = make_model(name, X.shape[1], classes)
    config = TrainConfig(strategy="sync", epochs=2, batch_size=32, seed=7, **settings)
    dist = train(model, X, model.encode_labels(y), config, Group.from_comm(COMM))
    serial = train(model, X_all, model.encode_labels(y_all), config, Group.serial())
    ok = np.allclose(dist.theta, serial.theta, rtol=1e-9, atol=1e-11)
    agree(COMM, ok, f"max diff {np.max(np.abs(dist.theta - serial.theta))}")
    agree(COMM, dist.updates == serial.updates == 2 * int(np.ceil(len(y_all) / (32 * config.accumulate))))
    # every rank holds the identical model
    agree(COMM, all(np.array_equal(t, dist.theta) for t in COMM.allgather(dist.theta)), "models differ")


def _oracle_logistic(X, y, alpha):
    """mean log-loss + alpha/2 |w|^2 (intercept free), minimized by Newton-CG with the exact Hessian."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])
    reg = np.r_[np.full(d, alpha), 0.0]

    def f(t):
        s = A @ t
        return np.mean(np.logaddexp(0, s) - y * s) + 0.5 * np.sum(reg * t * t)

    def g(t):
        return A.T @ (expit(A @ t) - y) / n + reg * t

    def h(t):
        p = expit(A @ t)
        return (A.T * (p * (1 - p))) @ A / n + np.diag(reg)

    res = minimize(f, np.zeros(d + 1), jac=g, hess=h, method="Newton-CG", options={"xtol": 1e-14})
    return res.fun, res.x


LBFGS_SPEC = "synthetic:classification,n=2400,d=10,separation=3"


@pytest.mark.mpi
@pytest.mark.parametrize("warm", [0, 1])
def test_lbfgs_reaches_scipy_optimum(warm):
    (X, y), (X_all, y_all) = block(LBFGS_SPEC)
    alpha = 1e-3
    warm_start = dict(warm_start_epochs=warm, lr=0.2) if warm else {}  # lr: the warm start's SGD steps
    est = LinearModel("logistic", "lbfgs", comm=COMM, alpha=alpha, tol=1e-10, **warm_start).fit(X, y)
    best, _ = _oracle_logistic(X_all, y_all, alpha)
    ours = est.history_[-1]["train_loss"]
    agree(COMM, abs(ours - best) <= 1e-6 * abs(best), f"objective {ours} vs scipy {best}")


@pytest.mark.mpi
def test_sgd_strategies_match_lbfgs_test_accuracy():
    n, n_test = 4000, 3000
    spec = "synthetic:classification,n=7000,d=10,separation=3,seed=3"
    (X, y), (X_all, y_all) = block(spec, n)
    (Xt, yt), _ = block(spec, n_test, start=n)
    alpha = 1e-4
    _, theta = _oracle_logistic(X_all, y_all, alpha)
    kind, options = synthetic.parse_spec(spec)
    Xt_all, yt_all = synthetic.generate(kind, options, n, n + n_test)
    oracle_acc = np.mean(((Xt_all @ theta[:-1] + theta[-1]) > 0) == yt_all)
    for strategy, settings in [("lbfgs", {}), ("sync", dict(batch_size=64, lr=0.5, epochs=4)),
                               ("local", dict(batch_size=16, lr=0.2, sync_every=4, epochs=4)),
                               ("oneshot", dict(batch_size=16, lr=0.2, epochs=4))]:
        est = LinearModel("logistic", strategy, comm=COMM, alpha=alpha, **settings).fit(X, y, Xt, yt)
        acc = est.score(Xt, yt)
        agree(COMM, acc == pytest.approx(est.history_[-1]["test_accuracy"]), "score disagrees with history")
        agree(COMM, abs(acc - oracle_acc) <= 0.01, f"{strategy}: test accuracy {acc} vs optimum's {oracle_acc}")


@pytest.mark.mpi
@pytest.mark.parametrize("strategy,settings", [
    ("sync", dict(momentum=0.9, checkpoint_every=25)),
    ("local", dict(optimizer="adam", lr=0.05, sync_every=3)),
    ("oneshot", dict(checkpoint_every=4)),
])
def test_interrupted_and_resumed_equals_uninterrupted(shared_tmp, strategy, settings):
    (X, y), _ = block("synthetic:classification,n=900,d=7,density=0.5")
    config = TrainConfig(strategy=strategy, epochs=3, batch_size=16, seed=11, **settings)
    model = make_model("logistic", X.shape[1])
    group = Group.from_comm(COMM)
    whole = train(model, X, y, config, group)
    stop = whole.updates // 2 + 1  # mid-epoch
    first = train(model, X, y, config, group, checkpoint_dir=shared_tmp, stop_at_update=stop)
    agree(COMM, first.interrupted and first.updates == stop, f"stopped at {first.updates}")
    rest = train(model, X, y, config, group, checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, rest.resumed_from == stop, f"resumed from {rest.resumed_from}")
    agree(COMM, np.array_equal(rest.theta, whole.theta), "resumed model is not bitwise the uninterrupted one")
    agree(COMM, [h["train_loss"] for h in rest.history] == [h["train_loss"] for h in whole.history], "history")


@pytest.mark.mpi
def test_sync_resumes_at_another_rank_count(shared_tmp):
    (X, y), (X_all, y_all) = block("synthetic:classification,n=800,d=6")
    config = TrainConfig(strategy="sync", epochs=2, batch_size=32, seed=5, momentum=0.5)
    model = make_model("logistic", X.shape[1])
    whole = train(model, X_all, y_all, config, Group.serial())
    # interrupt on fewer ranks (all but the last, or 1), holding the rows in consecutive blocks
    few = max(COMM.size - 1, 1)
    sub = COMM.Split(0 if COMM.rank < few else MPI.UNDEFINED, COMM.rank)
    if sub != MPI.COMM_NULL:
        lo, hi = synthetic.row_block(len(y_all), sub.rank, sub.size)
        train(model, X_all[lo:hi], y_all[lo:hi], config, Group.from_comm(sub), checkpoint_dir=shared_tmp,
              stop_at_update=30)
        sub.Free()
    COMM.Barrier()
    rest = train(model, X, y, config, Group.from_comm(COMM), checkpoint_dir=shared_tmp, resume=True)
    agree(COMM, rest.resumed_from == 30, f"resumed from {rest.resumed_from}")
    agree(COMM, np.allclose(rest.theta, whole.theta, rtol=1e-9, atol=1e-11), "different trajectory")


@pytest.mark.mpi
def test_divergence_raises_everywhere_and_keeps_the_checkpoint(shared_tmp):
    (X, y), _ = block("synthetic:regression,n=600,d=5")
    X = X * 30.0
    config = TrainConfig(strategy="sync", epochs=4, batch_size=20, lr=0.1, checkpoint_every=4)
    model = make_model("linear", X.shape[1])
    error = None
    try:
        train(model, X, y, config, Group.from_comm(COMM), checkpoint_dir=shared_tmp)
    except DivergenceError as exc:
        error = str(exc)
    messages = COMM.allgather(error)
    agree(COMM, all(m is not None and m == messages[0] for m in messages), messages)
    agree(COMM, "not finite" in messages[0] and "checkpoint" in messages[0], messages[0])
    arrays, manifest = read_checkpoint(shared_tmp)
    agree(COMM, np.isfinite(arrays["theta"]).all() and manifest["step"] >= 1, manifest)


@pytest.mark.mpi
def test_sparse_softmax_estimator_predicts_like_its_coefficients():
    (X, y), _ = block("synthetic:classification,n=600,d=40,classes=3,density=0.2")
    est = LinearModel("softmax", "local", comm=COMM, epochs=2, batch_size=16, lr=0.3).fit(X, y)
    agree(COMM, sp.issparse(X) and est.coef_.shape == (40, 3))
    expected = np.argmax(X @ est.coef_ + est.intercept_, axis=1)
    agree(COMM, np.array_equal(est.predict(X), expected))
    agree(COMM, est.score(X, y) > 0.6, est.score(X, y))


@pytest.mark.mpi
def test_standardized_training_gives_a_model_of_the_raw_features():
    (X, y), _ = block("synthetic:classification,n=1500,d=4,separation=2")
    skew = np.array([1000.0, 0.01, 1.0, 50.0]), np.array([5.0, -3.0, 0.0, 100.0])
    X_raw = X * skew[0] + skew[1]
    # unpenalized logistic regression is affine invariant: the same optimum either way
    plain = LinearModel("logistic", "lbfgs", comm=COMM, alpha=0.0, tol=1e-12).fit(X, y)
    scaled = LinearModel("logistic", "lbfgs", comm=COMM, alpha=0.0, tol=1e-12, standardize=True).fit(X_raw, y)
    agree(COMM, np.allclose(scaled.coef_ * skew[0], plain.coef_, rtol=1e-4, atol=1e-6),
          f"{scaled.coef_ * skew[0]} vs {plain.coef_}")
    agree(COMM, np.array_equal(scaled.predict(X_raw), plain.predict(X)) or
          np.mean(scaled.predict(X_raw) != plain.predict(X)) < 0.002)
