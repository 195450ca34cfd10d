"""FactorModel with partitioned factors at p ranks: serving and saving equal to replicated factors."""

from __future__ import annotations

import pytest
from mpi4py import MPI
from mpi_helpers import agree, shared_tmp, sub_comm  # noqa: F401 - shared_tmp is a fixture
from partitioned_model_cases import serving_problems, store_problems


@pytest.mark.mpi
def test_partitioned_model_serves_as_replicated():
    comm = MPI.COMM_WORLD
    bad = serving_problems(comm)
    agree(comm, not bad, bad)


@pytest.mark.mpi
def test_partitioned_model_saved_at_p_loads_at_other_counts(shared_tmp):  # noqa: F811
    world = MPI.COMM_WORLD
    with sub_comm(world.size - 1 or 1) as fewer:
        bad = store_problems(world, shared_tmp / "model", [fewer, MPI.COMM_SELF if world.rank == 0 else None])
    agree(world, not bad, bad)
