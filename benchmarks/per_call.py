"""Per-call cost of a tiny allreduce through mpiml against mpi4py's ``comm.Allreduce`` (issue 18).

    mpiexec -n 2 python benchmarks/per_call.py [--calls 2000] [--repeats 15] [--bytes 8]

Each repeat times ``calls`` back-to-back calls of every variant, interleaved (native, auto,
native, auto, ...), after a barrier; the table gives the median microseconds per call and
the ratio to mpi4py's own call. The goal: ``mpiml.allreduce(x, out=out)`` with ``auto`` at
most 1.5x ``comm.Allreduce(x, out)`` for 8 bytes at p = 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from mpi4py import MPI

import mpiml

GOAL = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--bytes", type=int, default=8)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    x = np.ones(max(args.bytes // 8, 1))
    out = np.empty_like(x)
    variants = {
        "comm.Allreduce(x, out)": lambda: comm.Allreduce(x, out),
        "mpiml.allreduce auto": lambda: mpiml.allreduce(x, out=out),
        "mpiml.allreduce native": lambda: mpiml.allreduce(x, out=out, algorithm="native"),
        "mpiml.allreduce ring": lambda: mpiml.allreduce(x, out=out, algorithm="ring"),
    }
    times = {name: [] for name in variants}
    for fn in variants.values():   # warm: plans, communicators
        for _ in range(10):
            fn()
    for _ in range(args.repeats):
        for name, fn in variants.items():
            comm.Barrier()
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            times[name].append((time.perf_counter() - start) / args.calls)
    if comm.rank:
        return
    base = statistics.median(times["comm.Allreduce(x, out)"])
    print(f"per call, {x.nbytes} B, p = {comm.size} (medians of {args.repeats} x {args.calls} calls, interleaved; "
          f"load {os.getloadavg()[0]:.1f})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median * 1e6:8.2f} us  {median / base:5.2f}x")
    ratio = statistics.median(times["mpiml.allreduce auto"]) / base
    print(f"goal auto <= {GOAL}x comm.Allreduce: {'met' if ratio <= GOAL else 'missed'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
