"""Communicator resolution."""

from __future__ import annotations

import pytest
from mpi4py import MPI

from mpiml.errors import ArgumentError
from mpiml.runtime.comm import resolve_comm


def test_resolve_comm_gives_the_world_for_none_and_refuses_other_things():
    assert resolve_comm(None) is MPI.COMM_WORLD and resolve_comm(MPI.COMM_SELF) is MPI.COMM_SELF
    for wrong in ("world", 0, MPI.COMM_WORLD.py2f()):
        with pytest.raises(ArgumentError, match=r"comm must be an mpi4py intracommunicator or None, got (int|str)$"):
            resolve_comm(wrong)
    with pytest.raises(ValueError, match="got str"):  # an ArgumentError is a ValueError
        resolve_comm("world")
