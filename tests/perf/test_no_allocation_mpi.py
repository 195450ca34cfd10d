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


@pytest.mark.mpi
@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather"])
def test_node_aware_reduce_scatter_and_allgather_allocate_nothing_per_call(collective):
    # Their temporaries (a leader's node sum and node blocks) are the workspace's: fresh ones cost a page
    # fault per 4 KiB on every call (measured: 6145 a call on a 16 MiB leader, priced apart by the model).
    from mpiml.collectives import nodes

    comm = MPI.COMM_WORLD
    previous = nodes.set_ranks_per_node(2)   # nodes of 2 ranks: leaders gather or reduce their node's data
    try:
        if collective == "reduce_scatter":
            x = np.ones(NBYTES // 4, np.float32)
            counts = [x.size // comm.size + (r < x.size % comm.size) for r in range(comm.size)]
            out = np.empty(counts[comm.rank], np.float32)

            def call():
                return mpiml.reduce_scatter(x, counts=counts, algorithm="hierarchical", out=out)
        else:
            x = np.ones(NBYTES // 4 // comm.size, np.float32)
            out = np.empty(x.size * comm.size, np.float32)

            def call():
                return mpiml.allgather(x, algorithm="hierarchical", out=out)
        call()   # warm: layout, workspace, plans
        tracemalloc.start()
        try:
            for _ in range(3):
                call()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        nodes.set_ranks_per_node(previous)
    peaks = comm.allgather(peak)
    assert max(peaks) < NBYTES // 16, peaks
