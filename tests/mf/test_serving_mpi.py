"""Serving on partitioned factors at p ranks against replicated oracles (run at p = 2, 3, 5; p = 1 in
test_serving.py)."""

from __future__ import annotations

import pytest
import serving_cases as cases
from mpi4py import MPI


@pytest.mark.mpi
def test_predict_and_evaluate_equal_the_replicated_model():
    cases.check_predict_and_evaluate(MPI.COMM_WORLD)


@pytest.mark.mpi
def test_recommend_merges_item_blocks_into_the_replicated_top_k():
    cases.check_recommend(MPI.COMM_WORLD)


@pytest.mark.mpi
def test_fold_in_fetches_item_rows_and_equals_the_replicated_fold_in():
    cases.check_fold_in(MPI.COMM_WORLD)


@pytest.mark.mpi
def test_blocks_saved_at_p_load_at_other_counts_and_damage_is_refused(shared_tmp):
    cases.check_block_store(MPI.COMM_WORLD, shared_tmp)


@pytest.mark.mpi
def test_users_added_on_several_ranks_equal_the_replicated_fold_in_with_user():
    cases.check_add_users(MPI.COMM_WORLD)
