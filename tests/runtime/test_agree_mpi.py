"""Collective verdicts: one rank's error is raised, identically, on every rank."""

from __future__ import annotations

import pytest
from mpi4py import MPI

from mpiml import DataError, MpimlError
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm


@pytest.mark.mpi
def test_no_error_anywhere_raises_nothing():
    comm = MPI.COMM_WORLD
    for round_ in range(3):  # every rank returns None, and stays in step with the others
        assert raise_if_any(None) is None
        assert raise_if_any(None, comm) is None
        assert private_comm(comm).allgather((round_, comm.rank)) == [(round_, r) for r in range(comm.size)]


@pytest.mark.mpi
def test_error_on_last_rank_is_raised_everywhere_with_its_class():
    comm = MPI.COMM_WORLD
    last = comm.size - 1
    error = DataError("bad value", path="shard.csv", line=3) if comm.rank == last else None
    with pytest.raises(DataError, match="shard.csv:3: bad value") as info:
        raise_if_any(error)
    assert info.value.collective


@pytest.mark.mpi
def test_foreign_exceptions_become_mpiml_errors_and_lowest_rank_wins():
    comm = MPI.COMM_WORLD
    error = KeyError(f"k{comm.rank}") if comm.rank >= comm.size // 2 else None
    with pytest.raises(MpimlError, match=f"KeyError: 'k{comm.size // 2}'"):
        raise_if_any(error)


@pytest.mark.mpi
def test_private_duplicate_is_cached_and_distinct():
    comm = MPI.COMM_WORLD
    dup = private_comm(comm)
    assert dup is private_comm(comm) and dup is private_comm(None)
    assert MPI.Comm.Compare(dup, comm) == MPI.CONGRUENT
