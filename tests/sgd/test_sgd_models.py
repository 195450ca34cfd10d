"""Models, penalties and optimizers against finite differences and textbook formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import approx_fprime

from mpiml.errors import ArgumentError
from mpiml.sgd.models import make_model
from mpiml.train.optim import Penalty, learning_rate, make_optimizer

CASES = [("linear", 1), ("logistic", 2), ("softmax", 4), ("svm", 2)]


def _data(name, k, rng, rows=30, d=6):
    X = rng.standard_normal((rows, d))
    y = {"linear": rng.standard_normal(rows), "softmax": rng.integers(0, k, rows).astype(float)}.get(
        name, rng.integers(0, 2, rows).astype(float))
    return X, y


@pytest.mark.parametrize("name,k", CASES)
def test_gradient_matches_finite_differences(name, k):
    rng = np.random.default_rng(1)
    X, y = _data(name, k, rng)
    model = make_model(name, X.shape[1], k, squared_hinge=(name == "svm"))
    y = model.encode_labels(y)
    theta = rng.standard_normal(model.n_params) * 0.3
    grad = np.zeros_like(theta)
    loss = model.loss_grad(theta, X, y, grad)
    assert loss == pytest.approx(model.loss(theta, X, y))
    numeric = approx_fprime(theta, lambda t: model.loss(t, X, y), 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-4)


def test_hinge_subgradient_away_from_the_kink():
    rng = np.random.default_rng(2)
    X, y = _data("svm", 2, rng)
    model = make_model("svm", X.shape[1])
    y = model.encode_labels(y)
    theta = rng.standard_normal(model.n_params)
    margins = (2 * y - 1) * model.scores(theta, X)[:, 0]
    assert np.min(np.abs(margins - 1)) > 1e-4  # no row at the kink
    grad = np.zeros_like(theta)
    model.loss_grad(theta, X, y, grad)
    np.testing.assert_allclose(grad, approx_fprime(theta, lambda t: model.loss(t, X, y), 1e-8), atol=1e-4)


@pytest.mark.parametrize("name,k", CASES)
def test_sparse_and_dense_agree(name, k):
    rng = np.random.default_rng(3)
    X, y = _data(name, k, rng)
    X[rng.random(X.shape) < 0.6] = 0.0
    model = make_model(name, X.shape[1], k)
    y = model.encode_labels(y)
    theta = rng.standard_normal(model.n_params)
    g_dense, g_sparse = np.zeros_like(theta), np.zeros_like(theta)
    a = model.loss_grad(theta, X, y, g_dense)
    b = model.loss_grad(theta, sp.csr_matrix(X), y, g_sparse)
    assert a == pytest.approx(b, rel=1e-12)
    np.testing.assert_allclose(g_dense, g_sparse, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.predict_encoded(theta, X), model.predict_encoded(theta, sp.csr_matrix(X)))


def test_sparse_data_is_never_densified():
    # 10 million columns: a dense copy of even one row block would need gigabytes.
    d = 10_000_000
    rng = np.random.default_rng(4)
    X = sp.csr_matrix((rng.standard_normal(1000), (rng.integers(0, 200, 1000), rng.integers(0, d, 1000))),
                      shape=(200, d))
    y = rng.integers(0, 2, 200).astype(float)
    model = make_model("logistic", d)
    theta = np.zeros(model.n_params)
    theta[X.indices] = 0.5
    grad = np.zeros_like(theta)
    loss = model.loss_grad(theta, X, y, grad)
    s = X @ theta[:d] + theta[d]
    assert loss == pytest.approx(float(np.sum(np.logaddexp(0, s) - y * s)))
    assert np.count_nonzero(grad[:d]) <= X.nnz


def test_labels_are_checked():
    assert make_model("logistic", 3).bad_label(np.array([0.0, 1.0, -1.0, 2.0])) == 3
    assert make_model("softmax", 3, n_classes=3).bad_label(np.array([0.0, 2.0, 1.5])) == 2
    assert make_model("softmax", 3, n_classes=3).bad_label(np.array([0.0, 3.0])) == 1
    assert make_model("linear", 3).bad_label(np.array([0.3, np.inf])) == 1
    assert make_model("svm", 3).bad_label(np.array([-1.0, 1.0])) is None
    with pytest.raises(ArgumentError, match="unknown model 'poisson'; choose from linear, logistic, softmax, svm"):
        make_model("poisson", 3)


def test_elastic_net_value_and_prox():
    pen = Penalty(alpha=0.5, l1_ratio=0.4)
    w = np.array([1.0, -0.05, 0.2, -2.0])
    assert pen.value(w) == pytest.approx(0.5 * (0.6 / 2 * np.sum(w ** 2) + 0.4 * np.sum(np.abs(w))))
    step = 0.3  # threshold 0.3 * 0.2 = 0.06
    expected = np.array([0.94, 0.0, 0.14, -1.94])
    pen.prox(w, step)
    np.testing.assert_allclose(w, expected)


def _reference_run(name, grads, lr, **kw):
    """Textbook update rules, written out independently of mpiml.train.optim."""
    theta = np.ones(grads.shape[1])
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if name == "momentum":
            m = kw["mu"] * m + g
            theta = theta - lr * m
        elif name == "nesterov":
            m = kw["mu"] * m + g
            theta = theta - lr * (g + kw["mu"] * m)
        elif name == "adagrad":
            v = v + g * g
            theta = theta - lr * g / (np.sqrt(v) + 1e-8)
        elif name == "adam":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            theta = theta - lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return theta


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adagrad", "adam"])
def test_optimizers_follow_their_update_rules(name):
    grads = np.random.default_rng(5).standard_normal((7, 5))
    kind = {"momentum": "sgd", "nesterov": "sgd"}.get(name, name)
    opt = make_optimizer(kind, 5, momentum=0.9 if kind == "sgd" else 0.0, nesterov=name == "nesterov")
    theta = np.ones(5)
    for g in grads:
        opt.step(theta, g, 0.05)
    np.testing.assert_allclose(theta, _reference_run(name, grads, 0.05, mu=0.9), rtol=1e-12)


def test_schedules():
    assert learning_rate("constant", 0.5, 99, 100) == 0.5
    assert learning_rate("inverse", 0.5, 10, 100, decay=0.1) == pytest.approx(0.25)
    assert learning_rate("sqrt", 0.5, 30, 100, decay=0.1) == pytest.approx(0.25)
    assert learning_rate("cosine", 0.5, 50, 100) == pytest.approx(0.25)
    assert learning_rate("cosine", 0.5, 100, 100) == pytest.approx(0.0)
    with pytest.raises(ArgumentError, match="unknown schedule 'warp'"):
        learning_rate("warp", 0.5, 1, 2)


@pytest.mark.parametrize("name,squared", [("linear", False), ("logistic", False), ("svm", False), ("svm", True)])
def test_compiled_pointwise_loss_equals_the_numpy_reference(name, squared):
    from mpiml.sgd import kernels

    rng = np.random.default_rng(6)
    s = np.concatenate([rng.standard_normal(500) * 5, [-800.0, -40.0, -1.0, 0.0, 1.0, 40.0, 800.0]])
    model = make_model(name, 1, squared_hinge=squared)
    y = rng.standard_normal(s.size) if name == "linear" else rng.integers(0, 2, s.size).astype(float)
    expected_loss, expected_r = model.reference_loss_and_residual(s[:, None], y)
    r = np.empty_like(s)
    loss = kernels.pointwise(model.kind, s, y, r)
    assert np.isfinite(loss) and loss == pytest.approx(expected_loss, rel=1e-13)
    np.testing.assert_allclose(r, expected_r[:, 0], rtol=1e-13, atol=1e-300)


def test_row_blocks_are_the_rows_of_a_slice_and_the_whole_is_not_copied():
    from mpiml.train.plan import row_block

    rng = np.random.default_rng(7)
    dense = rng.standard_normal((40, 6)) * (rng.random((40, 6)) < 0.4)
    X = sp.csr_matrix(dense)
    for lo, hi in ((0, 40), (0, 7), (7, 33), (33, 40), (39, 40), (40, 40), (10, 99)):
        np.testing.assert_array_equal(row_block(X, lo, hi).toarray(), dense[lo:hi])
        np.testing.assert_array_equal(row_block(dense, lo, hi), dense[lo:hi])
    assert row_block(X, 0, 40) is X and row_block(X, 0, 10 ** 9) is X


@pytest.mark.parametrize("name,k", CASES)
def test_the_public_loss_and_evaluation_equal_the_numpy_reference(name, k):
    rng = np.random.default_rng(8)
    X, y = _data(name, k, rng, rows=50)
    model = make_model(name, X.shape[1], k)
    y = model.encode_labels(y)
    theta = rng.standard_normal(model.n_params)
    s = model.scores(theta, X)
    loss, r = model.loss_and_residual(s, y)   # compiled where the model has a kernel
    expected_loss, expected_r = model.reference_loss_and_residual(s, y)
    assert r.shape == s.shape and loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(r, expected_r, rtol=1e-12, atol=1e-14)
    total, correct = model.evaluate(theta, X, y)
    right = {"linear": 0, "softmax": np.count_nonzero(np.argmax(s, axis=1) == y)}.get(
        name, np.count_nonzero((s[:, 0] > 0) == (y > 0)))
    assert total == pytest.approx(expected_loss, rel=1e-12) and correct == right


def test_row_blocks_cover_the_rows_once():
    from mpiml.train.plan import row_blocks

    assert row_blocks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert row_blocks(0, 4) == [(0, 0)] and row_blocks(3, 0) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("name,k", CASES)
@pytest.mark.parametrize("step", [0.0, 0.37, -2.5])
def test_the_line_search_loss_equals_its_numpy_reference(name, k, step):
    rng = np.random.default_rng(9)
    X, y = _data(name, k, rng, rows=40)
    model = make_model(name, X.shape[1], k, squared_hinge=(name == "svm"))
    y = model.encode_labels(y)
    z0, u = rng.standard_normal((40, model.k)) * 3, rng.standard_normal((40, model.k))
    got, expected = model.line_loss(z0, u, step, y), model.reference_line_loss(z0, u, step, y)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-15, atol=0)   # the scores
    assert got[1] == pytest.approx(expected[1], rel=1e-12) and got[3] == pytest.approx(expected[3], rel=1e-12)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[4], expected[4], rtol=1e-12, atol=1e-12)
    assert got[2].shape == z0.shape and got[4].shape == (model.k,)


@pytest.mark.parametrize("name,k", CASES)
@pytest.mark.parametrize("hinge", [False, True])
def test_the_row_by_row_line_loss_equals_its_numpy_reference(monkeypatch, name, k, hinge):
    rng = np.random.default_rng(10)
    X, y = _data(name, k, rng, rows=40)
    model = make_model(name, X.shape[1], k, squared_hinge=hinge)
    y = model.encode_labels(y)
    z0, u = rng.standard_normal((40, model.k)) * 3, rng.standard_normal((40, model.k))
    z0[:3] = [[0.0], [1.0], [-1.0]] if model.k == 1 else 0.0   # the hinge's corner, the sigmoid's middle
    for step, direction in ((0.0, None), (0.37, u), (-2.5, u)):
        monkeypatch.setenv("MPIML_KERNELS", "auto")
        got = model.row_line_loss(z0, direction, step, y)
        monkeypatch.setenv("MPIML_KERNELS", "numpy")
        expected = model.row_line_loss(z0, direction, step, y)
        np.testing.assert_array_equal(got[0], expected[0])             # the scores: the same arithmetic
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-14, atol=1e-15)
        assert got[1].shape == (40,) and got[2].shape == z0.shape
        if direction is None:
            assert got[3] is None and expected[3] is None
        else:
            np.testing.assert_allclose(got[3], expected[2] * u, rtol=1e-14, atol=1e-15)
        monkeypatch.setenv("MPIML_KERNELS", "auto")   # a row's values do not depend on the other rows
        part = model.row_line_loss(z0[5:9], None if direction is None else direction[5:9], step, y[5:9])
        np.testing.assert_array_equal(part[1], got[1][5:9])
