"""The lbfgs strategy (mpiml.train.lbfgs_math) against scipy and scikit-learn at scikit-learn's tolerances (serial)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from scipy.optimize import minimize

from mpiml.data import synthetic
from mpiml.sgd import LinearModel
from mpiml.train import lbfgs_math


def _problem(spec):
    kind, options = synthetic.parse_spec(spec)
    return synthetic.generate(kind, options, 0, options["n"])


def _objective(coef, intercept, X, y, alpha):
    s = X @ coef + intercept
    return float(np.mean(np.logaddexp(0, s) - y * s) + 0.5 * alpha * coef @ coef)


def test_the_stopping_rule_is_scikit_learns():
    """scikit-learn calls L-BFGS-B with maxcor 10 and ftol 64 eps; gtol is its tol (the setting)."""
    assert lbfgs_math.MEMORY == 10 and lbfgs_math.FTOL == 64 * np.finfo(float).eps


@pytest.mark.parametrize("spec", ["synthetic:classification,n=3000,d=20,separation=2",
                                  "synthetic:classification,n=3000,d=300,density=0.05,seed=4"])
def test_tight_tolerance_reaches_the_optimum(spec):
    X, y = _problem(spec)
    alpha = 1e-3
    est = LinearModel("logistic", "lbfgs", comm=MPI.COMM_SELF, alpha=alpha, tol=1e-10).fit(X, y)
    n, d = X.shape

    def f(t):
        s = X @ t[:d] + t[d]
        r = 1.0 / (1.0 + np.exp(-s)) - y
        g = np.r_[X.T @ r / n + alpha * t[:d], r.mean()]
        return np.mean(np.logaddexp(0, s) - y * s) + 0.5 * alpha * t[:d] @ t[:d], g

    best = minimize(f, np.zeros(d + 1), jac=True, method="BFGS", options={"gtol": 1e-12}).fun
    ours = _objective(est.coef_, est.intercept_, X, y, alpha)
    assert abs(ours - best) <= 1e-6 * abs(best)
    assert est.history_[-1]["train_loss"] == pytest.approx(ours, rel=1e-12)


@pytest.mark.parametrize("spec", ["synthetic:classification,n=4000,d=30,separation=2,seed=2",
                                  "synthetic:classification,n=4000,d=500,density=0.02,seed=5"])
def test_default_tolerance_matches_scikit_learn_in_no_more_iterations(spec):
    sklearn = pytest.importorskip("sklearn.linear_model", reason="the oracle is scikit-learn's LogisticRegression")
    X, y = _problem(spec)
    n = X.shape[0]
    ref = sklearn.LogisticRegression(C=1.0, tol=1e-4, max_iter=500).fit(X, y)
    est = LinearModel("logistic", "lbfgs", comm=MPI.COMM_SELF, alpha=1.0 / n).fit(X, y)  # C = 1 / (alpha n)
    ours = _objective(est.coef_, est.intercept_, X, y, 1.0 / n)
    theirs = _objective(ref.coef_[0], ref.intercept_[0], X, y, 1.0 / n)
    assert ours <= theirs * (1 + 1e-4)
    assert est.history_[-1]["lbfgs_iterations"] <= ref.n_iter_[0]
    assert est.history_[-1]["lbfgs_converged"]
    assert sp.issparse(X) == ("density" in spec)
