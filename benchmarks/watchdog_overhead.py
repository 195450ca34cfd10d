"""Per-call cost of the watchdog and check-mode bookkeeping: a tiny allreduce, before and after.

Runs, interleaved in one process per rank, the public ``allreduce`` of the code this branch
started from (its ``api.py`` from git, loaded beside the current one), the current one without
a timeout (the default of scripts), and the current one with a timeout set (the default of the
``mpiml`` commands, ``--timeout 1800``: the watchdog thread wakes once a second). Prints the
median seconds per call of each over the rounds, and the differences in nanoseconds.

    OMP_NUM_THREADS=1 mpiexec -n 2 python benchmarks/watchdog_overhead.py --base 0dbf7f0
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from mpi4py import MPI

import mpiml
from mpiml.runtime import watchdog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_base(commit: str):
    """The ``mpiml.collectives.api`` of ``commit``, as a separate module sharing everything else."""
    text = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:mpiml/collectives/api.py"], check=True,
                          capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "api_base.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("api_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="main", help="git commit of the code before (default: main)")
    parser.add_argument("--calls", type=int, default=20000, help="calls per timed block")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=4, help="float64 elements per allreduce")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    base = load_base(args.base)
    x = np.ones(args.size)
    out = np.empty_like(x)

    def run(fn, timeout):
        watchdog.configure(timeout)
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(args.calls):
            fn(x, out=out)
        seconds = (time.perf_counter() - start) / args.calls
        watchdog.configure(None)
        return comm.allreduce(seconds, op=MPI.MAX)

    variants = {"before": (base.allreduce, None), "no timeout": (mpiml.allreduce, None),
                "timeout set": (mpiml.allreduce, 1800)}
    for fn, timeout in variants.values():  # warm up
        run(fn, timeout)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (fn, timeout) in variants.items():
            times[name].append(run(fn, timeout))
    if comm.rank == 0:
        before = statistics.median(times["before"])
        print(f"p={comm.size}, allreduce of {args.size} float64, {args.calls} calls x {args.rounds} rounds "
              f"interleaved; load {os.getloadavg()[0]:.2f}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:12s} median {median * 1e6:8.3f} us/call   {(median - before) * 1e9:+7.0f} ns "
                  f"({median / before:.3f}x)")


if __name__ == "__main__":
    sys.exit(main())
