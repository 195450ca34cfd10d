"""The per-call path allocates no message-sized memory once warm (issue 3's plan)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from mpi4py import MPI

import mpiml

NBYTES = 1 << 20


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ("auto",) + mpiml.ALGORITHMS["allreduce"])
@pytest.mark.parametrize("in_place", [False, True])
def test_allreduce_allocates_nothing_per_call(algorithm, in_place):
    comm = MPI.COMM_WORLD
    x = np.ones(NBYTES // 4, np.float32)
    out = x if in_place else np.empty_like(x)
    mpiml.allreduce(x, algorithm=algorithm, out=out)  # warm: workspace and plans
    tracemalloc.start()
    try:
        for _ in range(3):
            mpiml.allreduce(x, algorithm=algorithm, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peaks = comm.allgather(peak)
    # numpy reports its data buffers to tracemalloc: a message-sized temporary would show here.
    assert max(peaks) < NBYTES // 16, peaks
