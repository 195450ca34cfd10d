"""Measuring the cost model's parameters on this machine (``mpiml tune``).

Every function is collective over ``comm`` and returns the same values on every rank.
Times are medians of many repetitions (robust to a noisy, shared machine).
"""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.collectives.workspace import msg

PING_PONG_BYTES = (8, 1 << 10, 8 << 10, 64 << 10, 512 << 10, 4 << 20)
GAMMA_DTYPES = ("float32", "float64", "float16", "int32", "int64", "complex64", "complex128")
STREAM_BYTES = 16 << 20   # larger than the caches, so rates are memory rates


def _median_seconds(func, reps: int) -> float:
    clock = time.perf_counter
    samples = np.empty(reps)
    for i in range(reps):
        start = clock()
        func()
        samples[i] = clock() - start
    return float(np.median(samples))


def _agreed(value: float, comm) -> float:
    """The maximum over ranks (the slowest rank decides a collective's time)."""
    return float(comm.allreduce(value, op=MPI.MAX))


def host_pairs(comm) -> dict[str, tuple[int, int]]:
    """Rank pairs to ping-pong: ``intra_node`` (two ranks on rank 0's host) and
    ``inter_node`` (rank 0 and the first rank on another host), where they exist."""
    hosts = comm.allgather(MPI.Get_processor_name())
    pairs = {}
    same = [r for r in range(1, len(hosts)) if hosts[r] == hosts[0]]
    other = [r for r in range(1, len(hosts)) if hosts[r] != hosts[0]]
    if same:
        pairs["intra_node"] = (0, same[0])
    if other:
        pairs["inter_node"] = (0, other[0])
    return pairs


def ping_pong(comm, pair, sizes=PING_PONG_BYTES, reps=200) -> dict[int, float]:
    """One-way time per message size (half a round trip) between the two ranks of ``pair``."""
    a, b = pair
    r = comm.Get_rank()
    result = {}
    buf = np.zeros(max(sizes), dtype=np.uint8)
    for nbytes in sizes:
        view = buf[:nbytes]
        count = max(10, min(reps, int(reps * 65536 / max(nbytes, 65536))))
        comm.Barrier()
        seconds = 0.0
        if r in pair:
            partner = b if r == a else a

            def once():
                if r == a:
                    comm.Send(msg(view), partner, 7)
                    comm.Recv(msg(view), partner, 7)
                else:
                    comm.Recv(msg(view), partner, 7)
                    comm.Send(msg(view), partner, 7)

            for _ in range(3):
                once()
            seconds = _median_seconds(once, count) / 2
        result[nbytes] = _agreed(seconds, comm)
    return result


def fit_line(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``t = intercept + bytes * slope`` (both clamped to be non-negative),
    weighted by 1/t so the small sizes that set the intercept count as much as the large ones."""
    sizes = np.array(sorted(points), dtype=float)
    times = np.array([points[s] for s in sorted(points)])
    weights = 1.0 / np.maximum(times, 1e-9)
    design = np.stack([np.ones_like(sizes), sizes], axis=1) * weights[:, None]
    (intercept, slope), *_ = np.linalg.lstsq(design, times * weights, rcond=None)
    return max(float(intercept), 0.0), max(float(slope), 1e-13)


def _rates_at(comm, nbytes, reps, dtypes, warm) -> tuple[float, dict]:
    """``(copy, {dtype: gamma})`` in seconds per byte at ``nbytes``, all ranks at once (the slowest rank's);
    ``warm``: each operand used once before the timing, so one that fits the caches is timed there."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    if warm:
        np.copyto(dst, src)
    comm.Barrier()
    copy = _agreed(_median_seconds(lambda: np.copyto(dst, src), reps) / nbytes, comm)
    gamma = {}
    for name in dtypes:
        dtype = np.dtype(name)
        n = nbytes // dtype.itemsize
        a, b, c = np.ones(n, dtype), np.ones(n, dtype), np.empty(n, dtype)
        if warm:
            np.add(a, b, out=c)
        comm.Barrier()
        gamma[name] = _agreed(_median_seconds(lambda: np.add(a, b, out=c), reps) / (n * dtype.itemsize), comm)
    return copy, gamma


def stream_rates(comm, nbytes=STREAM_BYTES, reps=10) -> dict:
    """Seconds per byte of ``np.copyto`` and of ``np.add(a, b, out=c)`` per dtype.

    All ranks run at once, as they do inside a collective (they share memory bandwidth).
    """
    copy, gamma = _rates_at(comm, nbytes, reps, GAMMA_DTYPES, warm=False)
    return {"copy": copy, "gamma_by_dtype": gamma}


RATE_BYTES = (64 << 10, 256 << 10, 1 << 20, 4 << 20)   # from inside L2 to past it (STREAM_BYTES: memory)
RATE_DTYPES = ("float32", "float64")


def rates_by_size(comm, sizes=RATE_BYTES, dtypes=RATE_DTYPES, streamed=None) -> dict:
    """``copy`` and ``gamma`` (seconds per byte) per size, all ranks at once, each operand reused from
    call to call as a collective's buffers are (so those that fit the caches are measured there):
    ``{"copy" or dtype: [[bytes, seconds per byte], ...]}`` for :attr:`ModelParams.rates_by_size`.
    ``streamed``: :func:`stream_rates`' result, added as the point at ``STREAM_BYTES``."""
    table = {name: [] for name in ("copy", *dtypes)}
    for nbytes in sizes:
        reps = max(20, min(400, (32 << 20) // nbytes))   # ~32 MB moved per rate: a few ms at most
        copy, gamma = _rates_at(comm, nbytes, reps, dtypes, warm=True)
        table["copy"].append([nbytes, copy])
        for name in dtypes:
            table[name].append([nbytes, gamma[name]])
    if streamed is not None:
        table["copy"].append([STREAM_BYTES, streamed["copy"]])
        for name in dtypes:
            table[name].append([STREAM_BYTES, streamed["gamma_by_dtype"][name]])
    return table


def python_costs(comm, reps=2000) -> dict:
    """The Python time of one algorithm step and of one ``mpiml`` call.

    ``step_overhead``: a Sendrecv of 8 bytes to oneself on COMM_SELF (the mpi4py call,
    no network) plus a tiny ufunc call and the slicing an algorithm does per step.
    ``call_overhead``: an ``mpiml.allreduce`` on one rank (argument checks, choice,
    dispatch) minus the local copy it ends in.
    """
    self_comm = MPI.COMM_SELF
    x, y, out = np.ones(2, np.float32), np.empty(2, np.float32), np.empty(2, np.float32)
    bounds = np.array([0, 1, 2])

    def step():
        lo, hi = bounds[0], bounds[2]
        self_comm.Sendrecv(msg(x[lo:hi]), 0, 9, msg(y[lo:hi]), 0, 9)
        np.add(x[lo:hi], y[lo:hi], out=out[lo:hi])

    def call():
        mpiml.allreduce(x, out=out, comm=self_comm)

    def copy():
        np.copyto(out, x)

    def mpi4py_call():
        self_comm.Sendrecv(msg(x), 0, 9, msg(y), 0, 9)

    for func in (step, call, copy, mpi4py_call):
        func()
    comm.Barrier()
    return {"step_overhead": _agreed(_median_seconds(step, reps), comm),
            "mpi4py_call": _agreed(_median_seconds(mpi4py_call, reps), comm),
            "call_overhead": _agreed(max(_median_seconds(call, reps) - _median_seconds(copy, reps), 0.0), comm)}
