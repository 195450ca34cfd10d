"""Pure parts of mpiml.mf.serving and mpiml.mf.block_store, and the serving checks at p = 1."""

from __future__ import annotations

import numpy as np
import pytest
import serving_cases as cases
from mpi4py import MPI

from mpiml.errors import ArgumentError
from mpiml.mf import serving
from mpiml.mf.block_store import read_plan
from mpiml.mf.metrics import top_k, top_k_reference


def test_serving_at_one_rank_equals_the_replicated_model(tmp_path):
    cases.check_predict_and_evaluate(MPI.COMM_WORLD)
    cases.check_recommend(MPI.COMM_WORLD)
    cases.check_fold_in(MPI.COMM_WORLD)
    cases.check_add_users(MPI.COMM_WORLD)
    cases.check_block_store(MPI.COMM_WORLD, tmp_path)


def test_scoring_in_chunks_of_rows_changes_nothing(monkeypatch):
    monkeypatch.setattr(serving, "SCORES", 30)   # 1 row of 23 items at a time
    cases.check_recommend(MPI.COMM_WORLD)


def test_top_k_breaks_ties_by_lower_index_as_a_full_sort_does():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        scores = rng.integers(0, 3, size=(4, n)).astype(float)
        scores[rng.random((4, n)) < 0.2] = -np.inf
        scores[rng.random((4, n)) < 0.05] = np.nan
        assert np.array_equal(top_k(scores, k), top_k_reference(scores, k))


def test_merging_blocks_top_k_gives_the_top_k_of_the_row():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        scores = rng.integers(0, 4, size=(3, n)).astype(float)
        scores[rng.random((3, n)) < 0.2] = -np.inf
        cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, 5))))
        bounds = np.concatenate([[0], cuts, [n]])
        idx, val = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo:
                best = top_k(scores[:, lo:hi], k)
                idx.append(best + lo)
                val.append(np.take_along_axis(scores[:, lo:hi], best, axis=1))
        got, got_scores = serving.merge_top_k(np.concatenate(idx, axis=1), np.concatenate(val, axis=1), min(k, n))
        want = top_k_reference(scores, k)
        assert np.array_equal(got, want)
        assert np.array_equal(got_scores, np.take_along_axis(scores, want, axis=1))


def test_read_plan_lists_the_overlapping_old_blocks():
    old = [0, 3, 3, 7, 10]
    assert read_plan(old, 0, 10) == [(0, 0, 3), (2, 0, 4), (3, 0, 3)]
    assert read_plan(old, 2, 5) == [(0, 2, 3), (2, 0, 2)]
    assert read_plan(old, 4, 4) == []
    assert read_plan(old, 7, 8) == [(3, 0, 1)]
    for lo in range(11):   # every row range is covered exactly once, in order
        for hi in range(lo, 11):
            rows = [old[b] + r for b, a, c in read_plan(old, lo, hi) for r in range(a, c)]
            assert rows == list(range(lo, hi))


def test_route_costs_count_the_rows_each_route_fetches():
    ub, ib = [0, 2, 4], [0, 3, 6]
    # users 0, 1 on rank 0 and items 4, 5 on rank 1: pairs (0,4), (1,4), (0,5), (3,0)
    costs = serving.route_costs(ub, ib, [0, 1, 0, 3], [4, 4, 5, 0])
    # to user owners: rank 0 fetches items 4, 5; rank 1 fetches item 0 -> 3; to item owners: rank 1
    # fetches users 0, 1; rank 0 fetches user 3 -> 3
    assert costs.tolist() == [3.0, 3.0]
    assert serving.route_costs(ub, ib, [0, 0, 0], [4, 5, 3]).tolist() == [3.0, 1.0]
    assert serving.route_costs(ub, ib, [0, 1], [0, 1]).tolist() == [0.0, 0.0]   # all local


def test_partitioned_factors_refuse_inconsistent_blocks():
    world = cases.make_world(0)
    pf = cases.share(world, MPI.COMM_SELF, [0, 37], [0, 23])
    assert pf.width == 5 and pf.n_users == 37 and pf.n_items == 23
    with pytest.raises(ArgumentError, match="blocks of shapes"):
        serving.PartitionedFactors(pf.user_bounds, pf.item_bounds, pf.user_block[:3], pf.item_block, pf.user_ids,
                                   pf.item_ids, pf.mu, pf.rated_indptr, pf.rated_indices, 0, 1)
    with pytest.raises(ArgumentError, match="bounds"):
        serving.PartitionedFactors([0, 30], pf.item_bounds, pf.user_block, pf.item_block, pf.user_ids,
                                   pf.item_ids, pf.mu, pf.rated_indptr, pf.rated_indices, 0, 1)


def test_from_model_takes_a_partitioned_models_blocks_or_cuts_a_replicated_one():
    world = cases.make_world(2)
    model = cases.replicated(world)
    comm = MPI.COMM_WORLD
    whole = serving.from_model(model, comm)
    assert cases._same(whole, cases.share(world, comm, [0, 37], [0, 23]))
    blocks = cases.replicated(world)
    del blocks.user_factors_, blocks.item_factors_
    blocks.user_bounds_, blocks.item_bounds_ = whole.user_bounds, whole.item_bounds
    blocks.user_block_, blocks.item_block_ = whole.user_block, whole.item_block
    blocks.local_rated_indptr_, blocks.local_rated_indices_ = whole.rated_indptr, whole.rated_indices
    assert cases._same(serving.from_model(blocks, comm), whole)
    with pytest.raises(ArgumentError, match="not fitted"):
        serving.from_model(cases.ALS(), comm)
