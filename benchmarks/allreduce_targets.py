"""The allreduce performance targets of issue 3, measured as ratios to native in one run.

    mpiexec -n 2 python benchmarks/allreduce_targets.py [--repeats 5] [--json]

Each repeat is a full interleaved ``mpiml bench`` pass (every algorithm once per
iteration, rotated); the ratio to native is taken per repeat, and the table reports the
median ratio over repeats with its range, so a noisy, shared machine shows as a wide
range rather than a wrong verdict. Targets (p = 2):

* ring and rabenseifner at >= 8 MiB: at most 0.7x native;
* from 512 KiB: no hand-written large-message algorithm (ring, rabenseifner) slower than native;
* auto: at most 1.3x native below 8 KiB, at most 1.0x from 32 KiB.
"""

from __future__ import annotations

import argparse
import json
import statistics

from mpi4py import MPI

from mpiml.perf.harness import Schedule, run_benchmark
from mpiml.perf.sizes import format_bytes, parse_sizes

SIZES = "8,1K,4K,32K,512K,8M,32M"


def target(algorithm: str, nbytes: int):
    """The ratio this (algorithm, size) must stay at or below, or None."""
    if algorithm in ("ring", "rabenseifner") and nbytes >= 8 << 20:
        return 0.7
    if algorithm in ("ring", "rabenseifner") and nbytes >= 512 << 10:
        return 1.0
    if algorithm == "auto" and nbytes < 8 << 10:
        return 1.3
    if algorithm == "auto" and nbytes >= 32 << 10:
        return 1.0
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default=SIZES)
    parser.add_argument("--min-time", type=float, default=0.1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    ratios, medians, runs = {}, {}, {}
    for _ in range(args.repeats):
        # Every registered allreduce algorithm and auto (run_benchmark's default).
        for rec in run_benchmark("allreduce", parse_sizes(args.sizes), comm=comm,
                                 schedule=Schedule(min_time=args.min_time, max_iters=2000)):
            key = (rec["bytes"], rec["algorithm"])
            ratios.setdefault(key, []).append(rec["ratio_to_native"])
            medians.setdefault(key, []).append(rec["time_median_seconds"])
            runs[key] = rec["runs"]
    rows = []
    for (nbytes, name), values in ratios.items():
        limit = target(name, nbytes)
        ratio = statistics.median(values)
        rows.append({"bytes": nbytes, "algorithm": name, "runs": runs[(nbytes, name)],
                     "time_median_seconds": statistics.median(medians[(nbytes, name)]),
                     "ratio_median": ratio, "ratio_min": min(values), "ratio_max": max(values),
                     "target": limit, "met": None if limit is None else ratio <= limit})
    if comm.Get_rank() != 0:
        return
    if args.json:
        print(json.dumps({"ranks": comm.Get_size(), "repeats": args.repeats, "rows": rows}))
        return
    print(f"# allreduce float32 sum, p={comm.Get_size()}, {args.repeats} repeats; ratio = time / native time "
          "in the same interleaved run; median [min-max] over repeats")
    print(f"{'size':>6}  {'algorithm':<26}  {'median_us':>10}  {'x_native':>8}  {'range':>11}  target")
    for row in rows:
        name = row["algorithm"] + (f"->{row['runs']}" if row["algorithm"] == "auto" else "")
        verdict = "" if row["target"] is None else f"<= {row['target']}: {'met' if row['met'] else 'MISSED'}"
        print(f"{format_bytes(row['bytes']):>6}  {name:<26}  {row['time_median_seconds'] * 1e6:10.1f}  "
              f"{row['ratio_median']:8.2f}  {row['ratio_min']:5.2f}-{row['ratio_max']:<5.2f}  {verdict}")


if __name__ == "__main__":
    main()
