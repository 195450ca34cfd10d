"""Helpers of the MPI tests: a verdict every rank asserts, a directory every rank shares."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def shared_tmp():
    """A temporary directory shared by every rank (rank 0 makes and removes it)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path = comm.bcast(tempfile.mkdtemp(prefix="mpiml-test-") if comm.rank == 0 else None, root=0)
    yield Path(path)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def agree(comm, ok, why=""):
    """Assert on every rank that every rank's verdict is good (so no rank runs ahead into a hang)."""
    verdicts = comm.allgather((bool(ok), str(why)))
    bad = [(rank, w) for rank, (good, w) in enumerate(verdicts) if not good]
    assert not bad, bad


@contextlib.contextmanager
def sub_comm(size):
    """The first ``size`` ranks of COMM_WORLD as a communicator (None on the other ranks); freed after."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    sub = world.Split(0 if world.rank < size else MPI.UNDEFINED, world.rank)
    try:
        yield None if sub == MPI.COMM_NULL else sub
    finally:
        if sub != MPI.COMM_NULL:
            sub.Free()


def sub_sizes(world_size):
    """The sub-communicator sizes a reproducibility test runs: 1, p - 1 and p (the harness's runs at p = 2, 3
    and 5 and the p = 6 run then cover each size 1..6 without repeating all of them in every run)."""
    return sorted({1, max(world_size - 1, 1), world_size})
