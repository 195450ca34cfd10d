"""FactorModel with partitioned factors on one rank (the MPI file runs the same checks at p > 1)."""

from __future__ import annotations

from mpi4py import MPI
from partitioned_model_cases import serving_problems, store_problems


def test_partitioned_model_serves_and_stores_as_replicated_on_one_rank(tmp_path):
    assert serving_problems(MPI.COMM_SELF) == []
    assert store_problems(MPI.COMM_SELF, tmp_path / "model", [MPI.COMM_SELF]) == []
