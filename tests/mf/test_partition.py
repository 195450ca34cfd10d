"""Row costs and cost-balanced blocks against brute force (pure, serial)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpiml.errors import ArgumentError
from mpiml.mf.partition import CostModel, balanced_blocks, row_costs


def best_bottleneck(weights, parts):
    """The smallest possible heaviest block over every contiguous split (brute force)."""
    n, best = len(weights), np.inf
    for cuts in itertools.combinations_with_replacement(range(n + 1), parts - 1):
        bounds = (0, *cuts, n)
        best = min(best, max(sum(weights[bounds[b]:bounds[b + 1]]) for b in range(parts)))
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=9), st.integers(1, 4))
def test_cost_blocks_are_within_one_row_of_the_brute_force_optimum(weights, parts):
    w = np.array(weights)
    bounds = balanced_blocks(w, parts)
    assert bounds[0] == 0 and bounds[-1] == w.size and np.all(np.diff(bounds) >= 0)
    heaviest = max(w[bounds[b]:bounds[b + 1]].sum() for b in range(parts))
    tolerance = 1e-9 * (1 + w.sum())
    # Each cut lands within half the crossing row of its target total, so a block exceeds
    # total/parts by at most one row; and no split beats max(total/parts, heaviest row).
    assert heaviest <= w.sum() / parts + w.max() + tolerance
    assert heaviest <= best_bottleneck(list(w), parts) + w.max() + tolerance


def test_cost_blocks_balance_work_not_rows():
    # 10 light rows then 10 rows ten times heavier: the cut gives the light side many more rows.
    w = np.r_[np.ones(10), 10 * np.ones(10)]
    bounds = balanced_blocks(w, 2)
    assert bounds.tolist() == [0, 15, 20] or bounds.tolist() == [0, 14, 20]
    totals = [w[:bounds[1]].sum(), w[bounds[1]:].sum()]
    assert max(totals) / np.mean(totals) < 1.1


def explicit_cost(nnz, k, solver, cg_steps, model):
    """Counted the long way: one unit per multiply-add of a loop nest that does the per-rating work."""
    if nnz == 0:
        return model.overhead
    extra = model.overhead + model.per_rating * nnz
    if solver == "cholesky":
        gram = sum(1 for _ in range(nnz) for _ in range(k) for _ in range(k))  # sum of y y^T
        return extra + model.dense * k**3 / 3 + gram
    per_step = sum(1 for _ in range(2) for _ in range(nnz) for _ in range(k))  # Y_u v, then Y_u^T (c * Y_u v)
    rhs = 2 * nnz * k  # Y_u^T (c p) and the starting residual's Y_u x
    return extra + cg_steps * (model.dense * k * k + per_step) + rhs


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_row_costs_follow_the_operation_counts(solver):
    model = CostModel(dense=1.7, per_rating=9.0, overhead=123.0)
    counts = np.array([0, 1, 2, 7, 30])
    for k in (1, 3, 8):
        got = row_costs(counts, k, solver, cg_steps=4, model=model)
        expected = [explicit_cost(int(c), k, solver, 4, model) for c in counts]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_row_costs_rank_few_dense_rows_against_many_sparse_ones():
    # At rank 50 a row's solve outweighs ~17 ratings of Gram work: 100 one-rating rows cost
    # more than one row of 100 ratings, which count-balancing would treat as equal.
    model = CostModel(dense=1.0, per_rating=0.0, overhead=0.0)
    sparse, dense = row_costs(np.ones(100), 50, model=model).sum(), row_costs([100], 50, model=model).sum()
    assert sparse > 5 * dense
    with pytest.raises(ArgumentError, match="unknown solver 'lu'"):
        row_costs([1], 5, solver="lu")
