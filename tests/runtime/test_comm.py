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


def test_the_context_of_a_communicator_is_found_again_until_it_is_freed():
    import numpy as np

    import mpiml
    from mpiml.runtime.comm import context_of

    comm = MPI.COMM_WORLD.Dup()
    context = context_of(comm)
    assert context_of(comm) is context and context_of(None) is context_of(MPI.COMM_WORLD)
    assert context_of(comm) is context   # after another communicator's lookup, from the attribute
    x = np.arange(3.0)
    out = np.empty(3)
    for _ in range(2):   # the second call takes the repeated-call plan
        assert mpiml.allreduce(x, comm=comm, out=out) is out and np.array_equal(out, x * MPI.COMM_WORLD.size)
    comm.Free()   # drops the context, and its duplicate, with the communicator
    assert context.comm == MPI.COMM_NULL
    again = MPI.COMM_WORLD.Dup()
    try:
        assert context_of(again) is not context
        assert np.array_equal(mpiml.allreduce(x, comm=again, out=out), x * MPI.COMM_WORLD.size)
    finally:
        again.Free()
