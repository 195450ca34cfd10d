"""examples/logistic_regression*.py against plain numpy gradient descent on the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from examples_helpers import number, run_example

from mpiml.data import synthetic

# As in the examples.
DATA = "synthetic:classification,n=6000,d=20,seed=1"
ALPHA = 1e-3


def rows():
    """The whole data set with an intercept column, and its labels."""
    kind, options = synthetic.parse_spec(DATA)
    X, y = synthetic.generate(kind, options, 0, options["n"])
    return np.hstack([X, np.ones((len(y), 1))]), y


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def objective(X, y, w):
    z = X @ w
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * ALPHA * w[:-1] @ w[:-1])


def gradient(X, y, w):
    g = X.T @ (sigmoid(X @ w) - y) / len(y)
    g[:-1] += ALPHA * w[:-1]
    return g


@pytest.mark.parametrize("ranks", [2, 3])
def test_full_batch_loop_matches_serial_gradient_descent(ranks):
    out = run_example("logistic_regression.py", ranks).stdout
    X, y = rows()
    test = synthetic.holdout_mask(0, 0, len(y), 0.2)
    w = np.zeros(X.shape[1])
    for _ in range(150):
        w -= 2.0 * gradient(X[~test], y[~test], w)
    assert number(out, "train loss") == pytest.approx(objective(X[~test], y[~test], w), rel=1e-9)
    accuracy = np.mean((X[test] @ w > 0) == (y[test] > 0.5))
    assert number(out, "test accuracy") == pytest.approx(accuracy, abs=1.5 / test.sum())
    assert accuracy > 0.85  # the loop really learned something


def minibatch_sgd(X, y, epochs=3, batch=200, rate=1.0, seed=0):
    """The examples' schedule, serially: global batches from a seeded permutation per epoch."""
    n = len(y)
    w = np.zeros(X.shape[1])
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for b in range(n // batch):
            rows_ = order[b * batch:(b + 1) * batch]
            g = X[rows_].T @ (sigmoid(X[rows_] @ w) - y[rows_]) / batch
            g[:-1] += ALPHA * w[:-1]
            w -= rate * g
    return w


def test_preempted_at_3_ranks_resumes_at_2_to_the_uninterrupted_result(tmp_path):
    ck = tmp_path / "ck"
    stopped = run_example("logistic_regression_checkpoint.py", 3, "--checkpoint-dir", ck, "--stop-after", 40,
                          returncode=3)
    assert "stopped after update 40" in stopped.stdout and "mpiml: preempted" in stopped.stderr
    assert json.loads((ck / "manifest.json").read_text())["update"] == 40
    resumed = run_example("logistic_regression_checkpoint.py", 2, "--checkpoint-dir", ck, "--resume",
                          "--accumulate", 3)
    assert "resumed from update 40" in resumed.stdout
    X, y = rows()
    assert number(resumed.stdout, "train loss") == pytest.approx(objective(X, y, minibatch_sgd(X, y)), rel=1e-9)
