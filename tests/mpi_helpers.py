"""Helpers of the MPI tests: a verdict every rank asserts, a directory every rank shares."""

from __future__ import annotations

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
