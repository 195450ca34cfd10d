"""Tensor fusion: 100 arrays of 4 KiB allreduced as fused buckets against 100 separate calls (issue 19).

    mpiexec -n 2 python benchmarks/fusion.py [--arrays 100] [--bytes 4096] [--repeats 41] [--json]

Each repeat times, interleaved in a rotating order, after a barrier: ``separate`` (one
``mpiml.allreduce`` per array, ``auto``), ``fused`` (``mpiml.allreduce_many``, default
bucket size: one bucket), ``fused_nonblocking`` (``mpiml.iallreduce_many(...).wait()``)
and ``mpi_separate`` (one ``comm.Allreduce`` per array, the MPI library without mpiml's
Python). A repeat's time is the slowest rank's. Reported: the median over repeats, the
median of the per-repeat ratios to ``separate`` and the ratio of the medians. Goal: fused
<= 0.2x separate by both. The fused
results are checked bitwise against the separate calls with the bucket's algorithm.
Runs in a few seconds; set OMP_NUM_THREADS=1 (and the other BLAS thread counts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from mpi4py import MPI

import mpiml

GOAL = 0.2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrays", type=int, default=100)
    parser.add_argument("--bytes", type=int, default=4096, help="bytes per array (float64)")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(comm.rank)
    arrays = [rng.standard_normal(args.bytes // 8) for _ in range(args.arrays)]
    scratch = [np.empty_like(a) for a in arrays]

    def separate():
        return [mpiml.allreduce(a) for a in arrays]

    def fused():
        return mpiml.allreduce_many(arrays)

    def fused_nonblocking():
        return mpiml.iallreduce_many(arrays).wait()

    def mpi_separate():
        for a, out in zip(arrays, scratch):
            comm.Allreduce(a, out)
        return scratch

    variants = {"separate": separate, "fused": fused, "fused_nonblocking": fused_nonblocking,
                "mpi_separate": mpi_separate}
    # The check: fused equals separate calls with the fused bucket's algorithm, bitwise.
    total = sum(a.nbytes for a in arrays)
    from mpiml.collectives.select import choose

    name = choose("allreduce", "auto", total, comm.size)
    name = "rabenseifner" if name == "ring" and comm.size > 2 else name
    reference = [mpiml.allreduce(a, algorithm=name) for a in arrays]
    bitwise = all(np.array_equal(f, g) for f, g in zip(fused(), reference))
    bitwise = bool(comm.allreduce(int(bitwise), op=MPI.MIN))
    for function in variants.values():  # warm-up
        function()
    times = {key: [] for key in variants}
    keys = list(variants)
    for repeat in range(args.repeats):
        for key in keys[repeat % len(keys):] + keys[:repeat % len(keys)]:
            comm.Barrier()
            start = time.perf_counter()
            variants[key]()
            times[key].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    ratios = {key: statistics.median(t / s for t, s in zip(times[key], times["separate"])) for key in keys}
    of_medians = {key: statistics.median(times[key]) / statistics.median(times["separate"]) for key in keys}
    result = {"ranks": comm.size, "arrays": args.arrays, "bytes_per_array": args.bytes, "repeats": args.repeats,
              "fused_algorithm": name, "fused_bitwise_equal_to_separate": bitwise,
              "median_seconds": {key: statistics.median(t) for key, t in times.items()},
              "ratio_to_separate": ratios, "ratio_of_medians": of_medians,
              "goal": f"fused <= {GOAL}x separate",
              "verdict": "met" if max(ratios["fused"], of_medians["fused"]) <= GOAL else "missed"}
    if comm.rank == 0:
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"{args.arrays} arrays of {args.bytes} B at p={comm.size}, {args.repeats} interleaved repeats "
                  f"(median time; median of the per-repeat ratios to separate; ratio of the medians)")
            for key in keys:
                print(f"  {key:18s} {result['median_seconds'][key] * 1e6:10.1f} us   {ratios[key]:6.3f}x   "
                      f"{of_medians[key]:6.3f}x")
            print(f"fused via {name}, bitwise equal to separate {name} calls: {bitwise}")
            print(f"goal fused <= {GOAL}x separate (both ratios): {result['verdict']} "
                  f"({ratios['fused']:.3f}x, {of_medians['fused']:.3f}x)")


if __name__ == "__main__":
    main()
