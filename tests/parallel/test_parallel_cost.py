"""The per-update cost estimates: the formulas of the docstring, and the choices they imply."""

from __future__ import annotations

import math

import pytest

from mpiml.parallel import cost
from mpiml.errors import ArgumentError


def test_wide_sparse_small_batches_pick_a_model_split():
    wide = cost.Problem(n=20000, d=1_000_000, nnz=20000 * 20, k=1, batch=64, p=4)
    chosen = cost.choose(wide)
    data = cost.choose(wide, "data")
    assert chosen.parallel in ("model", "hybrid")
    # data parallelism sends only the batch gradient's nonzeros (mpiml.train.sparse_exchange), still 10x more
    assert chosen.bytes_per_step < data.bytes_per_step / 10
    assert chosen.seconds_per_step < data.seconds_per_step
    dense = cost.allreduce_cost(1_000_001 + 1 + 4, 4)
    assert data.bytes_per_step < dense[0] / 100 and data.comm_seconds < dense[1]


def test_narrow_problem_with_big_batches_picks_data_parallelism():
    narrow = cost.Problem(n=200000, d=10, nnz=200000 * 10, k=1, batch=4096, p=2)
    assert cost.choose(narrow).parallel == "data"
    assert cost.choose(narrow, "data").bytes_per_step < cost.choose(narrow, "model").bytes_per_step


def test_words_per_allreduce_follow_the_table():
    pr = cost.Problem(n=1000, d=100, nnz=100000, k=10, batch=120, p=6)
    e = cost.estimate(pr, 2, 3, "features")
    assert e.allreduce_words == (60 * 10, (100 / 3 + 1) * 10 + 1)
    e = cost.estimate(pr, 3, 2, "classes")
    assert e.allreduce_words == (3 * 40, 101 * 10 / 2 + 1)
    e = cost.estimate(pr, 6, 1, "features")
    assert e.allreduce_words == (0.0, 101 * 10 + 1 + 6)
    # bytes: nothing sent in a group of one; ring-sized vectors move 2 (q-1)/q of their bytes
    sent, _ = cost.allreduce_cost(1_000_000, 4)
    assert math.isclose(sent, 2 * 3 / 4 * 8e6)
    assert cost.allreduce_cost(10, 1) == (0.0, 0.0)


def test_layouts_enumerated_and_refused():
    soft = cost.Problem(n=100, d=50, nnz=5000, k=8, batch=32, p=4)
    kinds = {(e.grid, e.split) for e in cost.estimates(soft)}
    assert kinds == {("4x1", "features"), ("2x2", "features"), ("1x4", "features"), ("2x2", "classes"),
                     ("1x4", "classes")}
    binary = cost.Problem(n=100, d=3, nnz=300, k=1, batch=32, p=4)
    assert {e.grid for e in cost.estimates(binary)} == {"4x1", "2x2"}  # no 1x4: 3 features over 4 columns
    with pytest.raises(ArgumentError, match="no hybrid layout for 2 ranks"):
        cost.choose(cost.Problem(n=100, d=50, nnz=5000, k=1, batch=32, p=2), "hybrid")
    text = cost.explain(soft, cost.choose(soft))
    assert text.count("\n* ") + text.startswith("* ") == 1 and "bytes/step" in text


def test_lbfgs_words_per_iteration_follow_the_table():
    from mpiml.train.lbfgs_math import MEMORY

    T, gram = cost.LBFGS_TRIALS, 6 * MEMORY + 9
    pr = cost.Problem(n=1200, d=100, nnz=12000, k=10, batch=64, p=6)
    e = cost.estimate_lbfgs(pr, 2, 3, "features")
    assert e.allreduce_words == pytest.approx((600 * 10 + 3 + 3 + gram + 6, T * (10 + 2 + 2) + 100 * 10 / 3 + 2))
    e = cost.estimate_lbfgs(pr, 3, 2, "classes")
    assert e.allreduce_words == pytest.approx((T * (400 + 2 * 400 + 2 + 1) + 3 + gram + 4,
                                               T * (2 + 3) + 101 * 10 / 2 + 3))
    e = cost.estimate_lbfgs(pr, 6, 1, "features")
    assert e.allreduce_words == pytest.approx((0.0, T * (100 * 10 + 10 + 2 + 6)))   # the gradient with each loss
    assert e.model_bytes == pytest.approx(101 * 10 * cost.LBFGS_VECTORS * 8)


def test_lbfgs_picks_model_parallelism_for_wide_sparse_data_and_data_parallelism_for_narrow():
    wide = cost.Problem(n=50000, d=2_000_000, nnz=50000 * 50, k=1, batch=256, p=2)
    chosen, data = cost.choose(wide, strategy="lbfgs"), cost.choose(wide, "data", strategy="lbfgs")
    assert chosen.parallel == "model" and chosen.seconds_per_step < data.seconds_per_step
    assert chosen.bytes_per_step < data.bytes_per_step / 10 and chosen.model_bytes <= data.model_bytes / 1.9
    narrow = cost.Problem(n=400000, d=20, nnz=400000 * 20, k=1, batch=256, p=4)
    assert cost.choose(narrow, strategy="lbfgs").parallel == "data"
    text = cost.explain(wide, chosen, strategy="lbfgs")
    assert text.startswith("per-iteration cost estimates (lbfgs") and "model_MB/rank" in text


def test_choose_layout_prices_lbfgs_and_keeps_local_sgd_data_parallel():
    from mpiml.parallel.run import choose_layout

    wide = cost.Problem(n=20000, d=1_000_000, nnz=20000 * 20, k=1, batch=64, p=4)
    assert choose_layout(wide, "auto", strategy="lbfgs").parallel == "model"
    assert choose_layout(wide, "auto", strategy="local").parallel == "data"
    assert choose_layout(wide, "hybrid", strategy="lbfgs").grid == "2x2"
    chosen = choose_layout(wide, "auto", grid="2x2", strategy="lbfgs")
    assert chosen.grid == "2x2" and chosen == cost.estimate_lbfgs(wide, 2, 2)
    with pytest.raises(ArgumentError, match="is a model layout, not --parallel data"):
        choose_layout(wide, "data", grid="1x4", strategy="lbfgs")
