"""Reproducible mode's per-row pieces (pure): scores row by row, per-row losses, exact batch terms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mpiml.collectives import reproducible as exact
from mpiml.errors import ArgumentError
from mpiml.sgd import TrainConfig, make_model
from mpiml.train import reproducible


def _matrix(sparse, dtype, rows=23, cols=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) < 0.5)
    X = X.astype(dtype)
    return sp.csr_matrix(X) if sparse else X


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 3])
def test_scores_kernel_matches_the_reference_and_numpy(monkeypatch, sparse, dtype, k):
    X = _matrix(sparse, dtype)
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((6, k)), rng.standard_normal(k)
    monkeypatch.setenv("MPIML_KERNELS", "numba")
    fast = reproducible.scores(W, b, X)
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    slow = reproducible.scores(W, b, X)
    np.testing.assert_array_equal(fast, slow)
    dense = X.toarray() if sparse else X
    np.testing.assert_allclose(fast, dense.astype(np.float64) @ W + b, rtol=1e-12, atol=1e-12)


def test_column_maxima_kernel_matches_the_reference(monkeypatch):
    X = sp.csr_matrix(_matrix(False, np.float64, rows=50, cols=7) * 1e300)
    X.data[3] = np.nan
    got = {}
    for choice in ("numba", "numpy"):
        monkeypatch.setenv("MPIML_KERNELS", choice)
        got[choice] = np.full(7, 0.5)
        reproducible.column_abs_max(X.indices, X.data, got[choice])
    np.testing.assert_array_equal(got["numba"], got["numpy"])
    column = X.indices[3]
    others = np.abs(X.toarray()).max(axis=0)
    assert np.isnan(got["numba"][column])
    keep = np.arange(7) != column
    np.testing.assert_array_equal(got["numba"][keep], np.maximum(others[keep], 0.5))


def test_a_rows_score_does_not_depend_on_the_other_rows():
    X = _matrix(False, np.float64, rows=41)
    W, b = np.random.default_rng(2).standard_normal((6, 2)), np.zeros(2)
    whole = reproducible.scores(W, b, X)
    for lo, hi in ((0, 1), (3, 8), (5, 41), (17, 18)):
        np.testing.assert_array_equal(reproducible.scores(W, b, X[lo:hi]), whole[lo:hi])


@pytest.mark.parametrize("name", ["linear", "logistic", "svm", "softmax"])
def test_row_losses_sum_to_the_reference_loss(name):
    model = make_model(name, 4, 3)
    rng = np.random.default_rng(3)
    s = rng.standard_normal((30, model.k)) * 3
    y = rng.integers(0, 3 if name == "softmax" else 2, 30).astype(np.float64)
    y = model.encode_labels(y)
    losses, r = model.row_loss_and_residual(s, y)
    total, r_ref = model.reference_loss_and_residual(s, y)
    assert losses.shape == (30,) and float(losses.sum()) == total
    np.testing.assert_array_equal(r, r_ref)


def test_batch_terms_give_the_gradient_and_loss():
    model = make_model("softmax", 6, 3)
    X = _matrix(True, np.float64)
    y = model.encode_labels(np.random.default_rng(4).integers(0, 3, X.shape[0]).astype(float))
    theta = np.random.default_rng(5).standard_normal(model.n_params)
    terms = exact.Sum(model.n_params + 1, X.shape[0])
    reproducible.add_batch(model, theta, X, y, terms, model.n_params)
    sums = exact.reduce_sum(terms, lambda x: x, lambda x: x)
    grad = np.zeros(model.n_params)
    loss = model.loss_grad(theta, X, y, grad)
    np.testing.assert_allclose(sums[:-1], grad, rtol=1e-12, atol=1e-12)
    assert sums[-1] == pytest.approx(loss, rel=1e-12)


def test_exact_dot_and_the_environment(monkeypatch):
    a = np.array([1e16, 1.0, -1e16])
    assert reproducible.dot(a, np.ones(3)) == 1.0
    monkeypatch.setenv(reproducible.ENV, "1")
    assert reproducible.requested(False)
    monkeypatch.setenv(reproducible.ENV, "0")
    assert not reproducible.requested(False) and reproducible.requested(True)
    assert TrainConfig(reproducible=True).validate().reproducible
    with pytest.raises(ArgumentError):
        reproducible.check_layout(False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streamed_dense_scores_give_the_same_bits(monkeypatch, dtype):
    X = _matrix(False, dtype, rows=37, cols=19)
    rng = np.random.default_rng(8)
    W, b = rng.standard_normal((19, 2)), rng.standard_normal(2)
    paired = reproducible.scores(W, b, X)
    monkeypatch.setattr(reproducible, "STREAM_ROWS", 4)      # every block above it: one row at a time
    np.testing.assert_array_equal(reproducible.scores(W, b, X), paired)
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    np.testing.assert_array_equal(reproducible.scores(W, b, X), paired)
