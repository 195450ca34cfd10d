"""The memory roof of a collective inside one node, measured in the same run as the collective.

On one node nothing crosses a network: a collective is bounded by the memory work it cannot
avoid, done by all ranks at once. The least work, per rank, when every rank could read every
other's input in place (an MPI-3 shared window, say):

============== ==================================================================
allreduce      reduce a 1/p slice of the p inputs, copy the n-byte result out
reduce_scatter reduce a 1/p slice of the p inputs (the output is the slice)
reduce         as reduce_scatter (the root then holds its slices in place)
allgather      copy the n-byte output together
bcast          copy the n bytes out
============== ==================================================================

:func:`roof_seconds` times that work with numpy (``np.add`` into a preallocated slice,
``np.copyto``) on every rank at once, as the slowest rank sees it; ``mpiml bench --roof``
reports it beside each size (issue 18: busbw against a roof measured in the same run).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from mpi4py import MPI

ROOFS = ("allreduce", "reduce_scatter", "reduce", "allgather", "bcast")


def seconds_per_call(comm, work, calls: int) -> float:
    """Seconds per call of ``work()`` run by every rank at once (the slowest rank's)."""
    comm.Barrier()
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return comm.allreduce((time.perf_counter() - start) / calls, op=MPI.MAX)


def roof_parts(collective: str, nbytes: int, dtype, p: int) -> list:
    """The roof's steps for ``collective`` of ``nbytes`` at ``p`` ranks: callables on fresh arrays."""
    if collective not in ROOFS:
        raise ValueError(f"no memory roof for {collective!r}")
    dtype = np.dtype(dtype)
    n = max(nbytes // dtype.itemsize, 1)
    parts = []
    if collective in ("allreduce", "reduce_scatter", "reduce"):
        piece = -(-n // p)
        operands = [np.ones(piece, dtype) for _ in range(max(p, 2))]
        acc = np.empty(piece, dtype)

        def reduce_slice():
            np.add(operands[0], operands[1], out=acc)
            for other in operands[2:p]:
                np.add(acc, other, out=acc)

        parts.append(reduce_slice)
    if collective in ("allreduce", "allgather", "bcast"):
        source, target = np.ones(n, dtype), np.empty(n, dtype)
        parts.append(lambda: np.copyto(target, source))
    return parts


def roof_seconds(collective: str, nbytes: int, dtype="float32", comm=None, calls: int = 5) -> float:
    """The memory roof of ``collective`` on ``nbytes`` (seconds per call), measured now on ``comm``'s
    ranks at once: the median of three timings of each step, summed (collective)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    total = 0.0
    for work in roof_parts(collective, nbytes, dtype, comm.Get_size()):
        work()   # fault the pages in
        total += statistics.median(seconds_per_call(comm, work, calls) for _ in range(3))
    return total
