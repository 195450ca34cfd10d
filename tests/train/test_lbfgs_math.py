"""The pure L-BFGS of mpiml.train.lbfgs_math against scipy's L-BFGS-B and against the textbook recursion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der
from scipy.special import expit

from mpiml.train import lbfgs_math as L


def _logistic(seed=0, n=300, d=40, alpha=1e-3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)
    y = (rng.random(n) < expit(X @ rng.standard_normal(d))).astype(float)

    def fun(w):
        s = X @ w
        return np.mean(np.logaddexp(0.0, s) - y * s) + 0.5 * alpha * w @ w, X.T @ (expit(s) - y) / n + alpha * w
    return fun, np.zeros(d)


def _quadratic(seed=1, d=30):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = Q @ np.diag(np.logspace(-1, 1, d)) @ Q.T
    b = rng.standard_normal(d)

    def fun(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b
    return fun, np.zeros(d), np.linalg.solve(A, b)


def _rosenbrock():
    return (lambda x: (rosen(x), rosen_der(x))), np.full(10, -1.2)


def _scipy(fun, x0, tol):
    return scipy_minimize(fun, x0, jac=True, method="L-BFGS-B",
                          options={"gtol": tol, "ftol": L.FTOL, "maxcor": L.MEMORY, "maxiter": 5000})


def _mine(fun, x0, tol, blocks=None):
    objective = L.FunctionObjective(fun, x0, blocks)
    return L.minimize(objective, blocks, tol=tol, max_iter=5000), objective


PROBLEMS = {"logistic": _logistic, "quadratic": lambda: _quadratic()[:2], "rosenbrock": _rosenbrock}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_tight_tolerance_reaches_scipys_optimum(name):
    fun, x0 = PROBLEMS[name]()
    ref = _scipy(fun, x0, 1e-12)
    result, objective = _mine(fun, x0, 1e-12)
    assert result.converged, result.message
    scale = max(1.0, np.abs(ref.x).max())
    assert np.abs(objective.x - ref.x).max() <= 1e-8 * scale
    assert abs(result.f - ref.fun) <= 1e-8 * max(abs(ref.fun), 1e-6)
    assert result.f == pytest.approx(fun(objective.x)[0], rel=1e-14, abs=1e-300)


def test_the_quadratics_optimum_is_the_linear_solution():
    """f within a few ulps of f* = f(A^-1 b); x within what that gap allows (eigenvalues >= 0.1)."""
    fun, x0, exact = _quadratic()
    result, objective = _mine(fun, x0, 1e-12)
    best = fun(exact)[0]
    assert result.converged and abs(result.f - best) <= 1e-12 * abs(best)
    assert np.linalg.norm(objective.x - exact) <= np.sqrt(2 * 1e-12 * abs(best) / 0.1)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_scikit_learn_tolerance_takes_scipys_iterations(name):
    fun, x0 = PROBLEMS[name]()
    ref = _scipy(fun, x0, 1e-4)
    result, _ = _mine(fun, x0, 1e-4)
    assert result.message == L.CONVERGED_G and str(ref.message).endswith("PGTOL")
    assert abs(result.iterations - ref.nit) <= 3, (result.iterations, ref.nit)
    assert abs(result.evaluations - ref.nfev) <= 5, (result.evaluations, ref.nfev)
    assert len(result.trace) == result.iterations and result.trace[-1] == result.f


def test_shared_entries_take_the_same_path():
    """Trailing entries summed term by term (the replicated intercepts) do not change the iterates."""
    fun, x0 = _logistic(seed=3)
    plain, a = _mine(fun, x0, 1e-10)
    shared, b = _mine(fun, x0, 1e-10, L.Blocks(shared=3))
    assert plain.iterations == shared.iterations
    np.testing.assert_allclose(b.x, a.x, rtol=0, atol=1e-10)


def test_stops_at_max_iter_and_at_a_stationary_start():
    fun, x0 = _logistic()
    result = L.minimize(L.FunctionObjective(fun, x0), tol=1e-12, max_iter=3)
    assert (result.iterations, result.message, result.converged) == (3, L.STOPPED, False)
    result = L.minimize(L.FunctionObjective(lambda x: (float(x @ x), 2 * x), np.zeros(4)))
    assert (result.iterations, result.message, result.converged) == (0, L.CONVERGED_G, True)


def test_a_wrong_gradient_ends_abnormally_without_moving():
    """The gradient claims descent where f rises: no step is found, the start is kept, the run ends."""
    x0 = np.array([1.0, -2.0])
    objective = L.FunctionObjective(lambda x: (float(x @ x), -2 * x), x0)
    result = L.minimize(objective, tol=1e-8)
    assert result.message == L.ABNORMAL and not result.converged and result.iterations == 0
    np.testing.assert_array_equal(objective.x, x0)


@given(seed=st.integers(0, 10**6), d=st.integers(1, 12), pairs=st.integers(0, 10))
def test_gram_two_loop_equals_the_textbook_two_loop(seed, d, pairs):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((d, d))
    A = M @ M.T + 0.1 * np.eye(d)           # positive curvature: s.y > 0 for every pair
    S = [rng.standard_normal(d) for _ in range(pairs)]
    Y = [A @ s for s in S]
    g = rng.standard_normal(d)
    m = 10
    order = list(range(pairs))
    basis = np.zeros((2 * m + 1, d))
    basis[:pairs] = np.reshape(S, (pairs, d))
    basis[m:m + pairs] = np.reshape(Y, (pairs, d))
    basis[2 * m] = g
    G = basis @ basis.T
    expect = L.two_loop(g, S, Y)
    for c in (L.gram_two_loop(G, order, m), L.gram_two_loop_reference(G, order, m)):   # compiled, numpy
        np.testing.assert_allclose(c @ basis, expect, rtol=1e-8, atol=1e-8 * np.abs(expect).max())
    np.testing.assert_allclose(L.gram_two_loop(G, order, m), L.gram_two_loop_reference(G, order, m),
                               rtol=1e-12, atol=1e-12 * np.abs(L.gram_two_loop_reference(G, order, m)).max())


def test_the_compiled_two_loop_is_the_reference_on_a_ring_in_use(monkeypatch):
    """Rows in ring order (oldest not first in memory), as after the history wrapped around."""
    rng = np.random.default_rng(5)
    m, d = 4, 9
    basis = rng.standard_normal((2 * m + 1, d))
    basis[m:2 * m] = basis[:m] * 2.0 + 0.1 * basis[m:2 * m]   # y ~ 2 s: positive curvature
    G = basis @ basis.T
    order = [2, 3, 0, 1]
    compiled = L.gram_two_loop(G, order, m)
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    np.testing.assert_allclose(compiled, L.gram_two_loop(G, order, m), rtol=1e-12, atol=1e-14)


@given(seed=st.integers(0, 10**6), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_line_search_steps_satisfy_the_strong_wolfe_conditions(seed, scale):
    fun, x0 = _logistic(seed % 50, n=60, d=8)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(8)
    f0, g = fun(x)
    p = -g * scale + 0.1 * rng.standard_normal(8) * np.linalg.norm(g) * scale
    slope = float(g @ p)
    if slope >= 0:
        p, slope = -p, -slope

    def phi(step):
        f, gt = fun(x + step * p)
        return f, float(gt @ p)

    ok, step, f, d, evaluations, task = L.line_search(phi, f0, slope, 1.0)
    assert ok and evaluations <= L.MAX_LINE_SEARCH
    assert (f, d) == phi(step)
    if task == "CONVERGENCE":
        assert f <= f0 + L.WOLFE_DECREASE * step * slope
        assert abs(d) <= L.WOLFE_CURVATURE * abs(slope)
    else:   # a warning: the step is still no worse than the start
        assert task.startswith("WARNING") and f <= f0


@given(seed=st.integers(0, 10**6), m=st.integers(1, 6), used=st.integers(0, 6), keep=st.booleans())
def test_the_compiled_gram_update_is_the_reference_to_the_bit(seed, m, used, keep):
    rng = np.random.default_rng(seed)
    k = min(used, m)
    order = list(rng.permutation(m)[:k]) if k == m else list(range(k))   # a wrapped ring, or rows 0..k-1
    h = -1
    if keep:
        h = k if k < m else order.pop(0)
        order.append(h)
    sums = rng.standard_normal(6 * k + 9)
    G0 = rng.standard_normal((2 * m + 1, 2 * m + 1))
    compiled, reference = G0.copy(), G0.copy()
    L.enter_dots(compiled, sums, order, k, m, h)
    L.enter_dots_reference(reference, sums, order, k, m, h)
    np.testing.assert_array_equal(compiled, reference)


def test_the_kernels_load_ahead_of_a_run_and_then_agree_with_the_references():
    L.load()   # compiles (or reads the cache of) every kernel of the module, on inputs it made up
    G = np.array([[2.0, 0.5, 0.3], [0.5, 1.0, 0.2], [0.3, 0.2, 1.5]])
    np.testing.assert_allclose(L.gram_two_loop(G, [0], 1), L.gram_two_loop_reference(G, [0], 1), rtol=1e-14)
