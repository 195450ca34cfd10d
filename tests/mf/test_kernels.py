"""The compiled factorization kernels (mpiml.mf.kernels) against their numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from mpiml.mf import als, dsgd, ials
from mpiml.mf.partition import build_rows

pytest.importorskip("numba")


def sparse_rows(rng, n_rows, n_cols, density=0.4, values=None):
    """CSR rows with an empty row (1), a one-rating row (2) and a full row (3) among random ones."""
    mask = rng.random((n_rows, n_cols)) < density
    mask[1] = False
    mask[2] = False
    mask[2, rng.integers(n_cols)] = True
    mask[3] = True
    rows, cols = np.nonzero(mask)
    vals = rng.normal(size=rows.size) if values is None else values(rows.size)
    return build_rows(0, n_rows, rows, cols, vals)


def strengths(rng):
    return lambda n: np.where(rng.random(n) < 0.2, 0.0, rng.integers(-1, 6, size=n)).astype(float)


@pytest.fixture(autouse=True)
def compiled_path(monkeypatch):
    """Every test here starts on the compiled path, whatever the environment says."""
    monkeypatch.delenv("MPIML_KERNELS", raising=False)


@pytest.fixture
def numpy_path(monkeypatch):
    """Run the block under ``MPIML_KERNELS=numpy`` (the references)."""

    class Switch:
        def __enter__(self):
            monkeypatch.setenv("MPIML_KERNELS", "numpy")

        def __exit__(self, *exc):
            monkeypatch.delenv("MPIML_KERNELS")

    return Switch()


# --------------------------------------------------------------------- ALS
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("k", [1, 5])
def test_ridge_rows_kernel_matches_the_reference(weighted, k):
    rng = np.random.default_rng(10 + k)
    rows = sparse_rows(rng, 30, 12)
    design, offset = rng.normal(size=(12, k)), rng.normal(size=12)
    got = als.ridge_rows(rows, design, offset, 0.3, weighted)
    expected = als.ridge_rows_reference(rows, design, offset, 0.3, weighted)
    assert got.dtype == np.float64 and np.all(got[1] == 0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_ridge_rows_kernel_gathers_long_rows_in_chunks():
    rng = np.random.default_rng(11)
    n_cols = 3 * 256 + 17  # several gather chunks in one row
    rows = build_rows(0, 2, np.repeat([0, 1], n_cols), np.tile(np.arange(n_cols), 2), rng.normal(size=2 * n_cols))
    design, offset = rng.normal(size=(n_cols, 6)), 0.25
    np.testing.assert_allclose(als.ridge_rows(rows, design, offset, 0.1),
                               als.ridge_rows_reference(rows, design, offset, 0.1), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("biases", [True, False])
def test_half_step_and_predictions_compiled_equal_numpy(biases, numpy_path):
    rng = np.random.default_rng(12)
    layout = als.Layout(4, biases)
    ur = sparse_rows(rng, 20, 15, values=lambda n: rng.integers(1, 6, size=n).astype(float))
    p, q = als.initial_factors(3, 20, 15, layout)
    got = als.half_step(ur, p, q, 3.2, 0.1, layout, "users")
    got_pred = als.predict_rows(ur, got, q, 3.2)
    with numpy_path:
        expected = als.half_step(ur, p, q, 3.2, 0.1, layout, "users")
        expected_pred = als.predict_rows(ur, expected, q, 3.2)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got_pred, expected_pred, rtol=1e-10, atol=1e-13)
    if biases:
        assert np.all(got[:, layout.fixed("users")] == 1.0)


def test_singular_ridge_system_raises_on_both_paths(numpy_path):
    rng = np.random.default_rng(13)
    rows = sparse_rows(rng, 6, 5)
    design = rng.normal(size=(5, 3))
    design[:, 1] = 0.0  # that unknown is unconstrained without regularization
    with pytest.raises(np.linalg.LinAlgError, match=r"the ridge system of row \d+ is not positive definite"):
        als.ridge_rows(rows, design, 0.0, 0.0)
    with numpy_path, pytest.raises(np.linalg.LinAlgError, match="(?i)singular"):
        als.ridge_rows(rows, design, 0.0, 0.0)


# -------------------------------------------------------------------- iALS
def ials_problem(seed, k=4, n_rows=25, n_cols=14):
    rng = np.random.default_rng(seed)
    rows = sparse_rows(rng, n_rows, n_cols, values=strengths(rng))
    y = rng.normal(size=(n_cols, k))
    start = rng.normal(size=(n_rows, k))
    return rows, y, start


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_ials_kernels_match_the_reference_in_float64(solver):
    rows, y, start = ials_problem(20)
    got = ials.ials_rows(rows, y, y.T @ y, 0.5, 3.0, solver, 3, start)
    expected = ials.ials_rows_reference(rows, y, y.T @ y, 0.5, 3.0, solver, 3, start)
    assert got.dtype == np.float64 and np.all(got[1] == 0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_ials_kernels_in_float32_stay_float32_and_close(solver, numpy_path):
    rows, y, start = ials_problem(21)
    y32, start32 = y.astype(np.float32), start.astype(np.float32)
    got = ials.ials_rows(rows, y32, y32.T @ y32, 0.5, 3.0, solver, 3, start32)
    expected = ials.ials_rows_reference(rows, y, y.T @ y, 0.5, 3.0, solver, 3, start)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    with numpy_path:
        assert ials.ials_rows(rows, y32, y32.T @ y32, 0.5, 3.0, solver, 3, start32).dtype == np.float32


def test_ials_cg_with_many_steps_converges_to_the_cholesky_solution():
    rows, y, start = ials_problem(22, k=6)
    exact = ials.ials_rows(rows, y, y.T @ y, 0.2, 5.0, "cholesky")
    cg = ials.ials_rows(rows, y, y.T @ y, 0.2, 5.0, "cg", 40, start)
    np.testing.assert_allclose(cg, exact, rtol=1e-9, atol=1e-11)
    y32 = y.astype(np.float32)
    cg32 = ials.ials_rows(rows, y32, y32.T @ y32, 0.2, 5.0, "cg", 40, start.astype(np.float32))
    np.testing.assert_allclose(cg32, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())


def test_ials_observed_loss_kernel_matches_the_reference(numpy_path):
    rows, y, start = ials_problem(23)
    got = ials.observed_loss(rows, start, y, 3.0)
    got32 = ials.observed_loss(rows, start.astype(np.float32), y.astype(np.float32), 3.0)
    with numpy_path:
        expected = ials.observed_loss(rows, start, y, 3.0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got32 == pytest.approx(expected, rel=1e-4)


# -------------------------------------------------------------------- DSGD
def sgd_problem(seed, k, biases):
    rng = np.random.default_rng(seed)
    n = 200
    block = dsgd.BlockRatings(rng.integers(0, 15, n), rng.integers(0, 10, n), rng.integers(1, 6, n).astype(float))
    layout = als.Layout(k, biases)
    x, y = als.initial_factors(seed, 15, 10, layout)
    fixed = (layout.fixed("users"), layout.fixed("items")) if biases else (-1, -1)
    return block, x, y, fixed


@pytest.mark.parametrize("biases", [True, False])
def test_sgd_kernel_equals_the_per_rating_reference(biases):
    block, x, y, fixed = sgd_problem(30, 3, biases)
    xr, yr = x.copy(), y.copy()
    for epoch in range(3):
        dsgd.sgd_block(block, x, y, 3.0, 0.02, 0.05, np.random.default_rng(epoch), *fixed)
        order = np.random.default_rng(epoch).permutation(block.vals.size)
        dsgd.sgd_block_reference(block, xr, yr, 3.0, 0.02, 0.05, order, *fixed)
    np.testing.assert_allclose(x, xr, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, yr, rtol=1e-12, atol=1e-14)
    if biases:
        assert np.all(x[:, fixed[0]] == 1.0) and np.all(y[:, fixed[1]] == 1.0)
        assert not np.allclose(x[:, fixed[0] - 1], 0.0)  # the user biases did move


def test_sgd_reference_is_textbook_biased_sgd():
    """One rating by hand, Surprise's update with the old user factor in the item's."""
    block, x, y, (xf, yf) = sgd_problem(31, 2, True)
    block = dsgd.BlockRatings(block.users[:1], block.items[:1], block.vals[:1])
    u, i, r = block.users[0], block.items[0], block.vals[0]
    p, bu, q, bi = x[u, :2].copy(), x[u, 2], y[i, :2].copy(), y[i, 3]
    lr, reg, mu = 0.1, 0.05, 3.0
    e = r - (mu + bu + bi + p @ q)
    xr, yr, xk, yk = x.copy(), y.copy(), x.copy(), y.copy()
    dsgd.sgd_block_reference(block, xr, yr, mu, lr, reg, [0], xf, yf)
    dsgd.sgd_block(block, xk, yk, mu, lr, reg, np.random.default_rng(0), xf, yf)
    for xx, yy in ((xr, yr), (xk, yk)):
        np.testing.assert_allclose(xx[u, :2], p + lr * (e * q - reg * p), rtol=1e-13)
        np.testing.assert_allclose(yy[i, :2], q + lr * (e * p - reg * q), rtol=1e-13)
        assert xx[u, 2] == pytest.approx(bu + lr * (e - reg * bu)) and xx[u, 3] == 1.0
        assert yy[i, 3] == pytest.approx(bi + lr * (e - reg * bi)) and yy[i, 2] == 1.0


def test_sgd_block_and_sse_compiled_equal_numpy(numpy_path):
    block, x, y, fixed = sgd_problem(32, 4, True)
    xn, yn = x.copy(), y.copy()
    dsgd.sgd_block(block, x, y, 3.0, 0.02, 0.05, np.random.default_rng(5), *fixed)
    sse = dsgd.block_sse(block, x, y, 3.0)
    with numpy_path:
        dsgd.sgd_block(block, xn, yn, 3.0, 0.02, 0.05, np.random.default_rng(5), *fixed)
        sse_n = dsgd.block_sse(block, xn, yn, 3.0)
    np.testing.assert_allclose(x, xn, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, yn, rtol=1e-12, atol=1e-14)
    assert sse == pytest.approx(sse_n, rel=1e-12)


# ------------------------------------------------------------ numpy switch
def test_numpy_switch_never_calls_a_kernel(monkeypatch):
    from mpiml.mf import kernels

    def refuse(*args):
        raise AssertionError("a compiled kernel ran under MPIML_KERNELS=numpy")

    for name in ("gram_solve_rows", "cg_rows", "sgd_ratings", "pair_dots", "residual_sse", "ials_observed"):
        monkeypatch.setattr(kernels, name, refuse)
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    rows, y, start = ials_problem(40)
    for solver in ("cholesky", "cg"):
        assert np.all(np.isfinite(ials.ials_rows(rows, y, y.T @ y, 0.5, 2.0, solver, 3, start)))
    assert np.isfinite(ials.observed_loss(rows, start, y, 2.0))
    assert np.all(np.isfinite(als.ridge_rows(rows, y, 0.0, 0.1)))
    assert als.predict_rows(rows, start, y, 1.0).shape == (rows.nnz,)
    block, x, yb, fixed = sgd_problem(41, 2, True)
    dsgd.sgd_block(block, x, yb, 3.0, 0.01, 0.01, np.random.default_rng(0), *fixed)
    assert np.isfinite(dsgd.block_sse(block, x, yb, 3.0))
