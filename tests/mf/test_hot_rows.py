"""Hot rows of partitioned ALS (pure): partial normal equations, their sums, and the priced thresholds."""

from __future__ import annotations

import numpy as np

from mpiml.mf import hot_rows
from mpiml.mf.als import ridge_rows_reference
from mpiml.mf.partition import build_rows


def _rows(rng, n_rows, n_other, nnz):
    pairs = np.unique(rng.integers(0, n_rows * n_other, nnz))
    return build_rows(0, n_rows, pairs // n_other, pairs % n_other, rng.normal(3.0, 1.0, pairs.size))


def test_partial_sums_added_up_solve_the_ridge_rows():
    rng = np.random.default_rng(3)
    for f, weighted in ((1, True), (4, True), (5, False)):
        rows, design = _rows(rng, 9, 40, 120), rng.normal(size=(40, f))
        offset, reg = rng.normal(size=40), 0.3
        whole = hot_rows.normal_equations(rows.indptr, rows.cols, rows.vals, design, offset)
        reference = hot_rows.normal_equations_reference(rows.indptr, rows.cols, rows.vals, design, offset)
        np.testing.assert_allclose(whole, reference, rtol=1e-12, atol=1e-12)   # the kernel and its reference
        # the same rows' entries dealt to three "ranks" at random, each summing its share, added up in order
        owner = rng.integers(0, 3, rows.nnz)
        parts, slots = [], []
        for s in range(3):
            keep = owner == s
            piece = build_rows(0, rows.n_rows, rows.row_ids()[keep], rows.cols[keep], rows.vals[keep])
            parts.append(hot_rows.normal_equations(piece.indptr, piece.cols, piece.vals, design, offset))
            slots.append(np.arange(rows.n_rows))
        summed = hot_rows.add_up(np.concatenate(parts), np.concatenate(slots), rows.n_rows, [rows.n_rows] * 3)
        np.testing.assert_allclose(summed, whole, rtol=1e-12, atol=1e-12)
        rated = rows.counts() > 0
        lam = reg * (rows.counts() if weighted else np.ones(rows.n_rows))
        w, sse = hot_rows.solve(summed[rated], lam[rated], f)
        np.testing.assert_allclose(w, ridge_rows_reference(rows, design, offset, reg, weighted)[rated], rtol=1e-10)
        full = np.zeros((rows.n_rows, f))
        full[rated] = w
        residual = rows.vals - offset[rows.cols] - np.einsum("ij,ij->i", design[rows.cols], full[rows.row_ids()])
        direct = np.bincount(rows.row_ids(), residual ** 2, minlength=rows.n_rows)[rated]
        np.testing.assert_allclose(sse, direct, rtol=1e-9, atol=1e-12)
    assert hot_rows.packed_width(3) == 6 + 3 + 1


def test_threshold_costs_price_what_each_rank_receives():
    rng = np.random.default_rng(5)
    for size in (2, 3, 4):
        n_rows, n_other = 12, 30
        rows = _rows(rng, n_rows, n_other, 90)
        counts = rows.counts() + rng.integers(0, 6, n_rows)   # global counts: more ratings on other ranks
        other_bounds = np.sort(np.concatenate([[0, n_other], rng.integers(0, n_other, size - 1)]))
        owner = np.searchsorted(other_bounds, rows.cols, side="right") - 1
        rank = int(rng.integers(0, size))
        grid = hot_rows.candidates(int(counts.max()))
        assert grid[0] == hot_rows.NEVER and list(grid[1:4]) == [1, 2, 4]
        got = hot_rows.threshold_costs(counts, rows.row_ids(), rows.cols, owner, rank, grid, 7, 100)
        for t, cost in zip(grid, got):
            routed, partials = set(), set()
            for r, c, o in zip(rows.row_ids(), rows.cols, owner):
                if o == rank:
                    continue
                if counts[r] > t:
                    partials.add((r, o))
                else:
                    routed.add(c)
            assert cost == 7 * len(routed) + 100 * len(partials), (size, t)
