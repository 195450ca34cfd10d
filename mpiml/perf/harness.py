"""The benchmark loop: time every algorithm at every size, interleaved, OSU-style.

Timing. Before each timed call all ranks meet at a barrier; each rank times its own
call with ``perf_counter``. The time of one iteration is the *maximum over ranks*
(the collective is done when its slowest rank is done, as OSU reports it); the
figures are the median, minimum and maximum of those over the iterations.

Interleaving. Within an iteration every algorithm runs once, in an order shuffled from
one iteration to the next (the same order on every rank, from a fixed seed), so drift of
a shared machine hits all algorithms alike, no algorithm always follows the same one
(whose cache and skew it would inherit), and the ratio to ``native`` measured in the
same run is meaningful.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpiml.collectives.registry import ALGORITHMS
from mpiml.collectives.select import choose
from mpiml.perf.metrics import algbw_gbps, busbw_gbps
from mpiml.perf.workloads import make_workload


@dataclass
class Schedule:
    """How many calls to time: ``iters`` fixed, or enough for ``min_time`` seconds."""

    iters: int | None = None
    warmup: int = 2
    min_time: float = 0.1      # seconds per algorithm and size when iters is None
    min_iters: int = 5
    max_iters: int = 1000

    def iterations(self, seconds_per_call: float) -> int:
        if self.iters is not None:
            return self.iters
        wanted = math.ceil(self.min_time / max(seconds_per_call, 1e-7))
        return int(min(self.max_iters, max(self.min_iters, wanted)))


def check_algorithms(workload, algorithms, comm) -> dict[str, bool]:
    """Run each algorithm once and compare its output with ``native``'s, bit for bit.

    The verdict is agreed: an algorithm is correct only if it is correct on every rank.
    """
    workload.prepare()
    workload.call("native")
    reference = workload.result()
    reference = None if reference is None else reference.copy()
    local = []
    for name in algorithms:
        workload.prepare()
        workload.call(name)
        got = workload.result()
        local.append(True if reference is None else bool(np.array_equal(got, reference)))
    flags = np.array(local, dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MIN)
    return {name: bool(flag) for name, flag in zip(algorithms, flags)}


def time_algorithms(workload, algorithms, schedule: Schedule, comm) -> tuple[np.ndarray, int]:
    """Per-iteration times (max over ranks), shape ``(len(algorithms), iters)``."""
    k = len(algorithms)
    orders = np.random.default_rng(workload.nbytes)  # the same sequence on every rank
    warm = np.zeros(k)
    for _ in range(max(schedule.warmup, 1)):
        warm[:] = _round(workload, algorithms, comm, orders.permutation(k))
    comm.Allreduce(MPI.IN_PLACE, warm, op=MPI.MAX)  # the same estimate, so the same count, everywhere
    iters = schedule.iterations(float(warm.max()))
    times = np.empty((k, iters))
    for i in range(iters):
        times[:, i] = _round(workload, algorithms, comm, orders.permutation(k))
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    return times, iters


def _round(workload, algorithms, comm, order):
    """Each algorithm once, in ``order``; returns this rank's times."""
    seconds = np.empty(len(algorithms))
    clock = time.perf_counter
    for index in order.tolist():
        if workload.prepare_timed:
            workload.prepare()
        comm.Barrier()
        start = clock()
        workload.call(algorithms[index])
        seconds[index] = clock() - start
    return seconds


def run_benchmark(collective, sizes, algorithms=None, *, dtype="float32", op="sum", in_place=False,
                  check=False, schedule=None, comm=None, on_size=None, shared_inputs=False) -> list[dict]:
    """Benchmark ``algorithms`` of ``collective`` at each size in ``sizes`` (bytes).

    ``algorithms`` defaults to every registered algorithm of ``collective`` and ``auto``.
    ``native`` is always timed (the baseline of ``ratio_to_native``) even when not asked
    for. Returns one record per (size, algorithm), identical on every rank; ``on_size``
    (if given) is called with each size's records as soon as they are measured.
    ``shared_inputs``: an allreduce's input lives in a :func:`mpiml.collectives.nodes.shared_array`.
    """
    comm = comm or MPI.COMM_WORLD
    schedule = schedule or Schedule()
    p = comm.Get_size()
    if algorithms is None:
        algorithms = [*ALGORITHMS[collective], "auto"]
    timed = list(dict.fromkeys(["native", *algorithms]))
    records = []
    for nbytes in sizes:
        workload = make_workload(collective, nbytes, dtype, op, in_place, comm, shared_inputs)
        verdicts = check_algorithms(workload, timed, comm) if check else {}
        times, iters = time_algorithms(workload, timed, schedule, comm)
        native_median = float(np.median(times[0]))
        size_records = []
        for name in algorithms:
            row = times[timed.index(name)]
            median = float(np.median(row))
            size_records.append({
                "collective": collective,
                "algorithm": name,
                "runs": choose(collective, name, workload.nbytes, p) if name == "auto" else name,
                "ranks": p,
                "bytes": workload.nbytes,
                "count": workload.count,
                "dtype": str(np.dtype(dtype)),
                "op": op,
                "in_place": bool(in_place and collective in ("allreduce", "reduce")),
                "iterations": iters,
                "time_median_seconds": median,
                "time_min_seconds": float(row.min()),
                "time_max_seconds": float(row.max()),
                "algbw_gbps": algbw_gbps(workload.nbytes, median),
                "busbw_gbps": busbw_gbps(collective, workload.nbytes, median, p),
                "ratio_to_native": median / native_median if native_median > 0 else None,
                "correct": verdicts.get(name) if check else None,
            })
        del workload
        records.extend(size_records)
        if on_size is not None:
            on_size(size_records)
    return records
