"""One benchmark case per collective: buffers, the timed call, and the correctness check.

Inputs hold small integers (also in floating dtypes), so every algorithm's result is
exact and must equal the MPI library's bit for bit, whatever order it reduces in.
Buffers are shared by all algorithms of one size (memory stays at a few vectors per
rank even at 256 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import mpiml
from mpiml.collectives.layout import balanced_counts, displacements
from mpiml.collectives.nodes import shared_array
from mpiml.collectives.registry import COLLECTIVES

ROOT = 0


def exact_input(n: int, dtype, op: str, rank: int) -> np.ndarray:
    """Values whose reduction over any number of ranks up to thousands stays exact."""
    dtype = np.dtype(dtype)
    i = np.arange(n, dtype=np.int64)
    if op == "prod":
        values = np.where((i + rank) % 7 == 0, -1, 1)  # products of +-1 never round
    elif op == "sum":
        values = (i * 7 + rank * 3) % 5 - (0 if dtype.kind == "u" else 2)
    else:
        values = (i * 7 + rank * 13) % 101
    return values.astype(dtype)


@dataclass
class Workload:
    """Buffers of one (collective, size) and the calls the harness times and checks."""

    collective: str
    nbytes: int          # the nccl-tests "size" of this case
    count: int           # elements of the whole vector
    call: Callable[[str], object]    # run the collective once with the named algorithm
    prepare: Callable[[], None]      # reset buffers before a checked call (untimed)
    result: Callable[[], np.ndarray | None]  # this rank's output to compare (None: nothing)
    prepare_timed: bool = False      # also before every timed call (in place: input overwritten)


def make_workload(collective, nbytes, dtype, op, in_place, comm, shared_inputs=False) -> Workload:
    """Allocate the buffers of ``collective`` at ``nbytes`` on this rank (an allreduce's input in a
    :func:`mpiml.collectives.nodes.shared_array` with ``shared_inputs``: ``shared_memory`` reads it in place)."""
    dtype = np.dtype(dtype)
    p, r = comm.Get_size(), comm.Get_rank()
    n = max(1, nbytes // dtype.itemsize)
    size = n * dtype.itemsize
    nothing = lambda: None  # noqa: E731 - the usual prepare step

    if collective in ("allreduce", "reduce"):
        pristine = exact_input(n, dtype, op, r)
        x = pristine.copy()
        if shared_inputs and collective == "allreduce":
            x = shared_array(n, dtype, comm)
            x[:] = pristine
        out = x if in_place else np.empty_like(x)
        prepare = (lambda: np.copyto(x, pristine)) if in_place else nothing
        if collective == "allreduce":
            call = lambda a: mpiml.allreduce(x, op=op, algorithm=a, comm=comm, out=out)  # noqa: E731
            return Workload(collective, size, n, call, prepare, lambda: out, in_place)
        target = out if r == ROOT else None
        call = lambda a: mpiml.reduce(x, ROOT, op=op, algorithm=a, comm=comm, out=target)  # noqa: E731
        return Workload(collective, size, n, call, prepare, lambda: out if r == ROOT else None, in_place)

    if collective == "reduce_scatter":
        x = exact_input(n, dtype, op, r)
        counts = balanced_counts(n, p)
        out = np.empty(int(counts[r]), dtype)
        call = lambda a: mpiml.reduce_scatter(x, op=op, algorithm=a, comm=comm, counts=counts, out=out)  # noqa: E731
        return Workload(collective, size, n, call, nothing, lambda: out)

    if collective == "allgather":
        bounds = displacements(balanced_counts(n, p))
        local = exact_input(n, dtype, "max", 0)[bounds[r]:bounds[r + 1]] + np.asarray(r, dtype)
        out = np.empty(n, dtype)
        call = lambda a: mpiml.allgather(local, algorithm=a, comm=comm, out=out)  # noqa: E731
        return Workload(collective, size, n, call, nothing, lambda: out)

    if collective == "bcast":
        source = exact_input(n, dtype, "max", ROOT)
        buf = source.copy() if r == ROOT else np.zeros(n, dtype)
        # Non-roots are cleared before each checked call, so a stale result cannot pass.
        prepare = nothing if r == ROOT else (lambda: buf.fill(0))
        call = lambda a: mpiml.bcast(buf, ROOT, algorithm=a, comm=comm)  # noqa: E731
        return Workload(collective, size, n, call, prepare, lambda: buf)

    raise ValueError(f"unknown collective {collective!r}")
