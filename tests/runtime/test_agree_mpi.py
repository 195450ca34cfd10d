"""Collective verdicts: one rank's error is raised, identically, on every rank."""

from __future__ import annotations

import pytest
from mpi4py import MPI

from mpiml import DataError, MpimlError
from mpiml.runtime.agree import raise_if_any
from mpiml.runtime.comm import private_comm


@pytest.mark.mpi
def test_no_error_anywhere_raises_nothing():
    raise_if_any(None)


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
