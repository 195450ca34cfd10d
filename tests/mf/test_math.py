"""The pure pieces of the factorization code against direct numpy/scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mf_reference import dense, ials_reference, ranking_reference

from mpiml.mf import als, dsgd, ials
from mpiml.mf.metrics import error_sums, ranking_sums, rmse_mae, top_k
from mpiml.mf.partition import balanced_blocks, block_of, build_rows


def random_rows(rng, n_rows, n_cols, density=0.3):
    mask = rng.random((n_rows, n_cols)) < density
    rows, cols = np.nonzero(mask)
    perm = rng.permutation(rows.size)  # arrival order must not matter
    return build_rows(0, n_rows, rows[perm], cols[perm], rng.normal(size=rows.size)[perm]), mask


@pytest.mark.parametrize("weighted", [True, False])
def test_ridge_rows_match_least_squares(weighted):
    rng = np.random.default_rng(1)
    rows, _ = random_rows(rng, 25, 15)
    design, offset, reg = rng.normal(size=(15, 4)), rng.normal(size=15), 0.3
    got = als.ridge_rows(rows, design, offset, reg, weighted)
    for r in range(rows.n_rows):
        s, e = rows.indptr[r], rows.indptr[r + 1]
        c = rows.cols[s:e]
        lam = reg * ((e - s) if weighted else 1)
        stacked = np.vstack([design[c], np.sqrt(lam) * np.eye(4)])
        target = np.concatenate([rows.vals[s:e] - offset[c], np.zeros(4)])
        expected = np.linalg.lstsq(stacked, target, rcond=None)[0] if e > s else np.zeros(4)
        np.testing.assert_allclose(got[r], expected, rtol=1e-9, atol=1e-12)


def test_ials_rows_match_the_dense_formula_and_cg_approaches_it():
    rng = np.random.default_rng(2)
    r = np.where(rng.random((12, 9)) < 0.4, rng.integers(1, 6, size=(12, 9)), 0).astype(float)
    m = r > 0
    rows = build_rows(0, 12, *np.nonzero(m), r[m])
    y = rng.normal(size=(9, 3))
    got = ials.ials_rows(rows, y, y.T @ y, 0.5, 4.0, "cholesky")
    x0 = rng.normal(size=(12, 3))
    expected, _, _ = ials_reference(r, m, x0, y, 0.5, 4.0, 0)
    for u in range(12):
        c = np.diag(1 + 4.0 * r[u])
        expected[u] = np.linalg.solve(y.T @ c @ y + 0.5 * np.eye(3), y.T @ c @ m[u])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    cg = ials.ials_rows(rows, y, y.T @ y, 0.5, 4.0, "cg", cg_steps=3, start=x0)  # k steps: exact in theory
    np.testing.assert_allclose(cg, expected, rtol=1e-6, atol=1e-8)
    one = ials.ials_rows(rows, y, y.T @ y, 0.5, 4.0, "cg", cg_steps=1, start=x0)
    assert np.linalg.norm(one - expected) < np.linalg.norm(x0 - expected)


def test_ials_loss_without_dense_work_equals_the_dense_objective():
    rng = np.random.default_rng(3)
    r = np.where(rng.random((10, 8)) < 0.5, rng.normal(size=(10, 8)), 0.0)
    m = r != 0
    rows = build_rows(0, 10, *np.nonzero(m), r[m])
    p, q = rng.normal(size=(10, 2)), rng.normal(size=(8, 2))
    got = ials.full_loss(ials.observed_loss(rows, p, q, 3.0), p, q, 0.7)
    _, _, expected = ials_reference(r, m, p, q, 0.7, 3.0, 0)
    assert np.isclose(got, expected, rtol=1e-10)


@given(st.lists(st.integers(0, 1000), min_size=0, max_size=60), st.integers(1, 7))
def test_balanced_blocks_cover_in_order_and_balance(counts, parts):
    counts = np.array(counts, dtype=np.int64)
    bounds = balanced_blocks(counts, parts)
    assert bounds[0] == 0 and bounds[-1] == counts.size and np.all(np.diff(bounds) >= 0)
    assert bounds.size == parts + 1
    totals = np.array([counts[bounds[b]:bounds[b + 1]].sum() for b in range(parts)])
    if counts.size:
        assert totals.max() <= counts.sum() / parts + counts.max() + 1e-9
        assert np.array_equal(block_of(np.arange(counts.size), bounds),
                              np.repeat(np.arange(parts), np.diff(bounds)))


def test_top_k_and_ranking_sums_follow_the_definitions():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(30, 25))
    best = top_k(scores, 5)
    assert np.array_equal(best, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    relevant = [set(rng.choice(25, size=rng.integers(0, 8), replace=False).tolist()) for _ in range(30)]
    sums = ranking_sums(best, relevant, 5)
    expected = [ranking_reference(best[u].tolist(), relevant[u], 5) for u in range(30) if relevant[u]]
    np.testing.assert_allclose(sums[:4], np.sum(expected, axis=0), rtol=1e-12)
    assert sums[4] == len(expected)


def test_error_sums():
    pred, truth = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    got = rmse_mae(error_sums(pred, truth))
    assert np.isclose(got["rmse"], np.sqrt(np.mean((pred - truth) ** 2))) and np.isclose(got["mae"], 0.5)


def test_sgd_block_lowers_the_block_loss_and_bold_driver():
    rng = np.random.default_rng(5)
    users, items = rng.integers(0, 20, 300), rng.integers(0, 15, 300)
    true_x, true_y = rng.normal(size=(20, 2)), rng.normal(size=(15, 2))
    block = dsgd.BlockRatings(users, items, np.einsum("ij,ij->i", true_x[users], true_y[items]))
    x, y = 0.1 * rng.normal(size=(20, 2)), 0.1 * rng.normal(size=(15, 2))
    before = dsgd.block_sse(block, x, y, 0.0)
    for _ in range(20):
        dsgd.sgd_block(block, x, y, 0.0, 0.05, 0.0, rng)
    assert dsgd.block_sse(block, x, y, 0.0) < 0.2 * before
    assert dsgd.next_rate("bold", 0.1, 0.1, 0, 5.0, 6.0, 0) == pytest.approx(0.105)
    assert dsgd.next_rate("bold", 0.1, 0.1, 0, 7.0, 6.0, 0) == pytest.approx(0.05)
    assert dsgd.next_rate("decay", 0.1, 0.05, 3, 1.0, 2.0, 0.5) == pytest.approx(0.1 / 3)


def test_dense_helper_roundtrip():
    r, m = dense(np.array([0, 1]), np.array([1, 0]), np.array([2.0, 3.0]), 2, 2)
    assert r[0, 1] == 2.0 and m.sum() == 2
