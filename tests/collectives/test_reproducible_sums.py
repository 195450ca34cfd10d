"""Reproducible sums (pure): exact-sum oracle (fractions), split invariance, kernels against their references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse

from mpiml.collectives import reproducible as R
from mpiml.errors import ArgumentError


def adversarial(rows, cols, seed):
    """Magnitudes 1e-300..1e300, exact cancellations, subnormals, zeros and a lone huge pair."""
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-300, 300, (rows, cols))
    half = rows // 2
    T[half:2 * half, 0] = -T[:half, 0]                       # sums to exactly 0
    T[:, 1] = rng.standard_normal(rows) * 1e-310               # subnormal terms
    T[: rows // 3, 2] = 0.0
    T[0, 3], T[1, 3] = 1e300, -1e300                           # the huge pair cancels, the rest stays
    T[2:, 3] = rng.uniform(-1, 1, rows - 2) * 1e-300
    return T


def exact(column):
    return sum((Fraction(float(t)) for t in column), Fraction(0))


def split_sum(T, parts, count=None):
    """The sum as ranks holding ``parts`` of the rows would compute it (max and sum of the folds)."""
    count = T.shape[0] if count is None else count
    sums = [R.Sum(T.shape[1], count).add_rows(p) for p in parts]
    E = np.max([R.exponents(s.maxima()) for s in sums], axis=0)
    F = np.zeros((R.plan(count).folds, T.shape[1]))
    with np.errstate(invalid="ignore"):
        for s in sums[::-1]:                                  # any order: the fold sums are exact
            F += s.folds(E)
    return R.value(F, E)


@pytest.mark.parametrize("seed", range(4))
def test_sum_is_within_the_bound_of_the_exact_sum(seed):
    T = adversarial(400, 6, seed)
    got = R.local_sum(T)
    for j in range(T.shape[1]):
        err = abs(Fraction(float(got[j])) - exact(T[:, j]))
        assert err <= Fraction(R.error_bound(T.shape[0], T.shape[0], np.abs(T[:, j]).max(), got[j])), j
    assert got[0] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_sum_does_not_depend_on_the_split_nor_the_order(seed):
    rng = np.random.default_rng(seed)
    T = adversarial(301, 5, seed)
    whole = R.local_sum(T)
    for parts in (1, 2, 3, 5, 6, 7):
        order = rng.permutation(T.shape[0])
        cuts = np.sort(rng.integers(0, T.shape[0], parts - 1))
        got = split_sum(T, np.split(T[order], cuts))
        np.testing.assert_array_equal(got, whole)


def test_float_sum_is_exact_where_it_can_be():
    # integers and a sum small enough that every piece fits: the exact value
    T = np.arange(1, 1001, dtype=np.float64)[:, None] * np.array([[1.0, -0.5, 2.0 ** -60]])
    got = R.local_sum(T)
    np.testing.assert_array_equal(got, [500500.0, -250250.0, 500500.0 * 2.0 ** -60])
    assert R.local_sum(np.array([[0.1], [0.2], [0.3]]))[0] == float(exact([0.1, 0.2, 0.3]))


def test_nonfinite_terms_decide_their_element_alone():
    T = np.array([[np.inf, 1.0, np.nan, np.inf, 1e308],
                  [-1e308, 2.0, 1.0, -np.inf, 1e308],
                  [-1e308, 3.0, 1.0, 1.0, 1e308]])
    got = R.local_sum(T)
    assert got[0] == np.inf and got[1] == 6.0 and np.isnan(got[2]) and np.isnan(got[3])
    assert got[4] == np.inf                                    # an exact sum beyond float64 overflows once
    np.testing.assert_array_equal(split_sum(T, [T[:1], T[1:]]), got)


def test_plan_has_headroom_and_enough_folds():
    for count in (1, 2, 255, 256, 1 << 20, (1 << 30) + 3):
        p = R.plan(count)
        assert count < 2 ** p.headroom and p.width == 53 - p.headroom
        # dropped remainders at most 2^-75 of the largest term, over every term
        assert count * p.unit(p.folds - 1) / 2 <= 2.0 ** -75 * 2 ** (p.headroom - 1) or p.folds >= 2
    assert R.plan(256).folds == 2 and R.plan(1 << 20).folds == 3
    with pytest.raises(ArgumentError):
        R.plan(-1)


def test_the_largest_count_stays_exact():
    # count terms of the largest magnitude: the first fold sums to count * 2^E - 1 ulp exactly
    count = 1 << 12
    T = np.full((count, 1), np.nextafter(1.0, 0.0))
    assert R.local_sum(T)[0] == float(exact(T[:, 0]))


def test_float32_rows_sum_as_float64():
    T = np.random.default_rng(1).standard_normal((50, 3)).astype(np.float32)
    np.testing.assert_array_equal(R.local_sum(T), R.local_sum(T.astype(np.float64)))


# --- compiled kernels against the numpy references --------------------------------------------------

def _kernels_vs_reference(monkeypatch, fn):
    monkeypatch.setenv("MPIML_KERNELS", "numba")
    fast = fn()
    monkeypatch.setenv("MPIML_KERNELS", "numpy")
    slow = fn()
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows, columns, count", [(97, [0, 1, 2, 3], 200), (97, [0], 200), (96, [0], 1 << 20),
                                                  (97, [3], 1 << 20)])
@pytest.mark.parametrize("square", [False, True])
def test_row_kernels_match_the_reference(monkeypatch, dtype, rows, columns, count, square):
    # one column has its own kernel path (folds in registers, rows two at a time: even and odd counts)
    T = np.ascontiguousarray(np.clip(adversarial(rows, 4, 3), -1e38, 1e38).astype(dtype)[:, columns])
    if len(columns) > 1:
        T[5, 2] = np.nan

    def run():
        s = R.Sum(4, count).add_rows(T, square=square)
        top = s.maxima()
        E = R.exponents(top)
        coarse = s.folds(E)
        # a grid too fine for the largest terms: flagged (its folds are not exact, so not compared)
        s.folds(np.maximum(E - 60, R.MIN_EXPONENT))
        return top, coarse, np.array([s.over])

    _kernels_vs_reference(monkeypatch, run)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [1, 3])
def test_outer_kernels_match_the_reference_and_the_explicit_terms(monkeypatch, sparse, dtype, k):
    rng = np.random.default_rng(k)
    X = rng.standard_normal((40, 9)) * (rng.random((40, 9)) < 0.3)
    X = X.astype(dtype)
    Rm = rng.standard_normal((40, k)) * 10.0 ** rng.uniform(-5, 5, (40, k))
    Xs = scipy.sparse.csr_matrix(X) if sparse else X

    def run():
        s = R.Sum(9 * k + 1, 40).add_outer(Xs, Rm, offset=1)
        top = s.maxima()
        E = R.exponents(top)
        F = s.folds(E)
        over = s.over
        s.folds(E - 1)
        # CSR data with its transpose at hand: the column-wise kernel, the same folds
        t = R.Sum(9 * k + 1, 40).add_outer(Xs, Rm, offset=1, columns=Xs.tocsc() if sparse else None)
        return top, F, R.value(F, E), np.array([over, s.over]), t.folds(E)

    _kernels_vs_reference(monkeypatch, run)
    # the outer terms are the terms X[i, j] * R[i, c] of element j k + c
    terms = (X.astype(np.float64)[:, :, None] * Rm[:, None, :]).reshape(40, 9 * k)
    explicit = R.Sum(9 * k + 1, 40).add_rows(terms, offset=1)
    got = R.Sum(9 * k + 1, 40).add_outer(Xs, Rm, offset=1)
    E = R.exponents(explicit.maxima())
    np.testing.assert_array_equal(R.value(got.folds(E), E), R.value(explicit.folds(E), E))


def test_squared_rows_sum_the_squares():
    T = adversarial(61, 4, 5)[:, 2:]   # zeros and magnitudes whose squares under- and overflow
    T[T == 0] = 3.0
    s = R.Sum(2, 61).add_rows(T, square=True)
    E = R.exponents(s.maxima())
    with np.errstate(over="ignore", under="ignore"):
        squares = R.Sum(2, 61).add_rows(T * T)
    np.testing.assert_array_equal(R.value(s.folds(E), E), R.value(squares.folds(E), E))


def test_sum_refuses_terms_outside_its_elements():
    with pytest.raises(ArgumentError):
        R.Sum(3, 10).add_rows(np.zeros((2, 2)), offset=2)
    with pytest.raises(ArgumentError):
        R.Sum(3, 10).add_outer(np.zeros((2, 2)), np.zeros((3, 1)))


def test_exponent_scale_and_value_kernels_match_the_reference(monkeypatch):
    top = np.array([0.0, 5e-324, 1e-310, 2.0 ** -1022, 0.5, 1.0, 3.0, 1e300, np.finfo(float).max, np.inf])
    F = np.array([[1.0, -3.0, 0.5, 2.0 ** 60, 1.5, -1.0, 7.0, 0.75, 0.999, np.inf],
                  [2.0 ** -70, 1e-20, -2.0 ** -80, 1.0, 0.0, 2.0 ** -60, -1e-17, 3e-20, 1e-17, 0.0]])

    def run():
        E = R.exponents(top)
        return E, R.scales(E), R.value(F, E), R.value(F, np.full(10, 1024.0)), R.value(F, np.full(10, -1021.0))

    _kernels_vs_reference(monkeypatch, run)
    E = R.exponents(top)
    with np.errstate(over="ignore"):
        assert np.all(top[:-1] < 2.0 ** E[:-1]) and E[-1] == R.SPECIAL


@pytest.mark.parametrize("columns", [False, True])
def test_outer_terms_with_their_own_count_stay_exact_and_split_free(monkeypatch, columns):
    # the most entries of a column (here 9 of 3000 rows) bounds each X^T r element's terms: 2 folds instead of 3
    rng = np.random.default_rng(11)
    rows, d = 3000, 400
    X = scipy.sparse.random(rows, d, density=0.002, format="csr", random_state=3)
    X.data = rng.standard_normal(X.nnz) * 10.0 ** rng.uniform(-100, 100, X.nnz)
    r = rng.standard_normal(rows) * 10.0 ** rng.uniform(-50, 50, rows)
    count = int(np.diff(X.tocsc().indptr).max())
    assert R.plan(count).folds == 2 < R.plan(100000).folds
    results = {}
    for choice in ("numba", "numpy"):
        monkeypatch.setenv("MPIML_KERNELS", choice)
        sums = []
        for parts in (1, 3, 7):
            bounds = np.linspace(0, rows, parts + 1).astype(int)
            pieces = [R.Sum(d, 100000).add_outer(X[a:b], r[a:b], 0, X[a:b].tocsc() if columns else None, count)
                      for a, b in zip(bounds[:-1], bounds[1:])]
            E = np.max([R.exponents(s.maxima()) for s in pieces], axis=0)
            F = sum(s.folds(E) for s in pieces)
            sums.append(R.value(F, E))
        for other in sums[1:]:
            np.testing.assert_array_equal(other, sums[0])
        results[choice] = sums[0]
    np.testing.assert_array_equal(results["numba"], results["numpy"])
    dense = X.toarray()
    for j in range(0, d, 37):
        terms = dense[:, j] * r
        got = results["numba"][j]
        err = abs(Fraction(float(got)) - exact(terms[dense[:, j] != 0]))
        assert err <= Fraction(R.error_bound(count, count, np.abs(terms).max(initial=0.0), got)), j
    with pytest.raises(ArgumentError):
        R.Sum(d, 100).add_outer(X, r, 0, None, 101)


def test_vector_sum_is_local_sum_of_one_element(monkeypatch):
    T = adversarial(257, 6, 2)
    T[5, 5] = np.nan
    for choice in ("numba", "numpy"):
        monkeypatch.setenv("MPIML_KERNELS", choice)
        for j in range(T.shape[1]):
            for count in (None, 100000):
                got = R.vector_sum(T[:, j], count)
                want = R.local_sum(T[:, j:j + 1], count=T.shape[0] if count is None else count)[0]
                assert got == want or (np.isnan(got) and np.isnan(want)), (choice, j)
                assert np.signbit(got) == np.signbit(want)
    assert R.vector_sum(np.zeros(0)) == 0.0
