"""The pure pieces of model-partitioned training against the unpartitioned models (no MPI).

The reductions a grid performs are simulated here with numpy over blocks, so the test
checks the math alone: partial margins, the split softmax's normalizer and residual,
the block gradients, and the parameter layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax, softmax

from mpiml.parallel import factorizations, make_part, parse_grid
from mpiml.parallel import margins
from mpiml.parallel.grid import block
from mpiml.errors import ArgumentError
from mpiml.sgd.models import make_model


def _data(rows, d, k, sparse, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, d))
    if sparse:
        X = sp.csr_matrix(X * (rng.random((rows, d)) < 0.3))
    theta = rng.standard_normal((d + 1) * k) * scale
    return X, theta, rng


@given(cols=st.integers(1, 6), k=st.integers(2, 7), rows=st.integers(1, 9), seed=st.integers(0, 10**6),
       scale=st.sampled_from([1.0, 1e3, 1e6]))
def test_split_softmax_equals_the_whole_softmax(cols, k, rows, seed, scale):
    """Max/sum-of-exp combination over class blocks gives scipy's loss and gradient, even for huge logits."""
    cols = min(cols, k)
    X, theta, rng = _data(rows, 4, k, False, seed, scale)
    y = rng.integers(0, k, size=rows)
    model = make_model("softmax", 4, k)
    grad = np.zeros_like(theta)
    whole_loss = model.loss_grad(theta, X, y, grad)
    parts = [make_part("classes", 4, k, cols, c) for c in range(cols)]
    scores = []
    for part in parts:
        W, b = part.split_local(theta[part.index])
        scores.append(margins.partial_scores(W, X) + b)
    top = np.max([margins.row_max(s) for s in scores], axis=0)             # the row-group max
    sums = np.sum([margins.exp_sums(s, top, y, p.lo) for s, p in zip(scores, parts)], axis=0)  # and sum
    split_grad = np.zeros_like(theta)
    for s, part in zip(scores, parts):
        loss, r = margins.softmax_loss_residual(s, top, sums, y, part.lo)
        gW, gb = margins.block_gradient(X, r, True)
        split_grad[part.index] = np.concatenate([gW.ravel(), gb])
    assert np.isfinite(loss)
    s_all = X @ theta[: 4 * k].reshape(4, k) + theta[4 * k:]
    assert np.isclose(loss, -log_softmax(s_all, axis=1)[np.arange(rows), y].sum(), rtol=1e-12, atol=1e-9)
    assert np.isclose(loss, whole_loss, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(split_grad, grad, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(grad).max()))
    assert margins.softmax_correct(top, sums) == np.count_nonzero(np.argmax(s_all, axis=1) == y)
    np.testing.assert_allclose(np.concatenate([margins.softmax_loss_residual(s, top, sums, y, p.lo)[1]
                                               for s, p in zip(scores, parts)], axis=1)
                               + np.eye(k)[y], softmax(s_all, axis=1), atol=1e-12)


@pytest.mark.parametrize("name,k", [("logistic", 1), ("linear", 1), ("softmax", 5), ("svm", 1)])
@pytest.mark.parametrize("sparse", [False, True])
def test_summed_partial_margins_give_the_whole_loss_and_gradient(name, k, sparse):
    X, theta, rng = _data(11, 13, k, sparse, 3)
    y = rng.integers(0, max(k, 2), size=11).astype(np.float64)
    model = make_model(name, 13, max(k, 2))
    y = model.encode_labels(y)
    grad = np.zeros_like(theta)
    whole_loss = model.loss_grad(theta, X, y, grad)
    for cols in (1, 2, 5, 13):
        parts = [make_part("features", 13, model.k, cols, c) for c in range(cols)]
        blocks = [X[:, p.lo:p.hi] for p in parts]
        s = sum(margins.partial_scores(p.split_local(theta[p.index])[0], Xc) for p, Xc in zip(parts, blocks))
        s = s + theta[13 * model.k:]
        loss, r = model.loss_and_residual(s, y)
        split_grad = np.zeros_like(theta)
        for p, Xc in zip(parts, blocks):
            gW, gb = margins.block_gradient(Xc, r, True)
            split_grad[p.index] = np.concatenate([gW.ravel(), gb])
        assert np.isclose(loss, whole_loss, rtol=1e-12)
        np.testing.assert_allclose(split_grad, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split,d,k,cols", [("features", 10, 1, 3), ("features", 7, 4, 7), ("classes", 5, 6, 4),
                                            ("classes", 3, 2, 2)])
def test_parts_cover_every_parameter(split, d, k, cols):
    model = make_model("softmax" if k > 1 else "logistic", d, max(k, 2))
    theta = np.arange(model.n_params, dtype=float)
    W, b = model.split(theta)
    seen = np.zeros(model.n_params, dtype=int)
    for c in range(cols):
        part = make_part(split, d, k, cols, c)
        Wl, bl = part.split_local(theta[part.index])
        seen[part.index] += 1
        expect_W = W[part.lo:part.hi] if split == "features" else W[:, part.lo:part.hi]
        np.testing.assert_array_equal(Wl, expect_W)
        np.testing.assert_array_equal(bl, b if split == "features" else b[part.lo:part.hi])
    weights = seen[: d * k]
    assert (weights == 1).all()  # each weight has exactly one owner
    assert (seen[d * k:] == (cols if split == "features" else 1)).all()  # intercepts: replicated or owned


def test_grid_shapes_and_refusals():
    assert factorizations(6) == [(6, 1), (3, 2), (2, 3), (1, 6)]
    assert factorizations(5) == [(5, 1), (1, 5)]
    assert parse_grid("2x3", 6) == (2, 3) and parse_grid("1X4", 4) == (1, 4)
    for bad, needle in (("2x2", "grid 2x2 needs 4 ranks, this job has 6"), ("3", "is not RxC"),
                        ("ax2", "is not RxC"), ("0x6", "grid 0x6 needs 0 ranks")):
        with pytest.raises(ArgumentError, match=needle):
            parse_grid(bad, 6)
    assert [block(10, 3, i) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ArgumentError, match="cannot split 3 classes over 4 grid columns"):
        make_part("classes", 5, 3, 4, 0)  # 3 classes over 4 columns
    with pytest.raises(ArgumentError, match="a classes split needs a softmax model"):
        make_part("classes", 5, 1, 1, 0)  # a binary model has no classes to split
    with pytest.raises(ArgumentError, match="unknown split 'rows'; choose from features, classes"):
        make_part("rows", 5, 1, 1, 0)
