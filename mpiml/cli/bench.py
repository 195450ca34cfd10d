"""``mpiml bench``: time mpiml's collectives against the MPI library's own, OSU-style."""

from __future__ import annotations

import argparse

from mpiml.cli.output import emit_json, say
from mpiml.cli.parser import Parser, check_writable, comma_list, sizes
from mpiml.errors import ArgumentError

DEFAULT_SIZES = "8:64M:4"
QUICK_SIZES = "8:1M:16"
REDUCING = ("allreduce", "reduce_scatter", "reduce")  # the collectives --op applies to

EPILOG = """timing: a barrier before every call; one call's time is the maximum over ranks;
median/min/max over iterations. Algorithms are interleaved (every algorithm once per
iteration), and x_native is the median time divided by native's in the same run.
algbw = size / time; busbw = algbw * 2(p-1)/p (allreduce), (p-1)/p (reduce_scatter,
allgather), 1 (bcast, reduce): the nccl-tests definitions. GB/s = 1e9 bytes/s.
--roof: roof_busbw is the busbw of a call that took the memory roof's time (numpy's
add/copy of what the collective cannot avoid moving on one node, by all ranks at once,
measured after each size); of_roof = roof time / median time (1.0: at the roof).

examples:
  mpiexec -n 4 mpiml bench allreduce --quick
  mpiexec -n 2 mpiml bench allreduce --sizes 8:256M --check --json
  mpiexec -n 2 mpiml bench allreduce --sizes 1M:64M:4 --roof
  mpiexec -n 2 mpiml bench allreduce --sizes 1M:64M:4 --roof --shared-inputs
  mpiexec -n 2 mpiml bench allgather --collective-algorithm ring,native --csv ag.csv --plot ag.png
"""


def build_parser():
    from mpiml.perf.workloads import COLLECTIVES

    parser = Parser(
        prog="mpiml bench", description="Benchmark a collective over a range of message sizes.",
        epilog=EPILOG)
    parser.add_argument("collective", choices=COLLECTIVES, metavar="COLLECTIVE",
                        help=f"the collective to time: {', '.join(COLLECTIVES)}")
    parser.add_argument("--sizes", default=None, type=sizes,
                        help=f"bytes: FROM:TO[:FACTOR] or a comma list, units K/M/G (default {DEFAULT_SIZES})")
    parser.add_argument("--collective-algorithm", default="all", metavar="NAME[,NAME...]",
                        help="the algorithms to time: 'all' or a comma list, e.g. ring,native,auto (default: all)")
    parser.add_argument("--dtype", default="float32", help="element type of the buffers")
    parser.add_argument("--op", default=None, choices=("sum", "prod", "min", "max"),
                        help="reduction of allreduce, reduce_scatter and reduce (default: sum)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per size (default: --min-time)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds per size (default 2)")
    parser.add_argument("--min-time", type=float, default=0.1,
                        help="seconds of timed calls per algorithm and size when --iters is not given (default 0.1)")
    parser.add_argument("--max-iters", type=int, default=1000, help="cap on timed iterations per size")
    parser.add_argument("--in-place", action="store_true", help="allreduce/reduce with out=x")
    parser.add_argument("--check", action="store_true", help="verify every algorithm against native (bitwise)")
    parser.add_argument("--shared-inputs", action="store_true",
                        help="allreduce: every rank's input in a shared array (mpiml.collectives.nodes.shared_array: "
                             "node-shared memory that shared_memory reads in place instead of copying it into its "
                             "window; the other algorithms read it as any array)")
    parser.add_argument("--roof", action="store_true",
                        help="also measure each size's memory roof on these ranks (the memory work the collective "
                             "cannot avoid on one node: mpiml.perf.roof) and print busbw at the roof and the share "
                             "of it each algorithm reaches")
    parser.add_argument("--tuning", metavar="FILE",
                        help="tuning file for 'auto' (default: $MPIML_TUNING, else the model)")
    parser.add_argument("--quick", action="store_true", help=f"a short run: sizes {QUICK_SIZES}, --min-time 0.02")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--csv", metavar="FILE", help="also write the results as CSV")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw bus bandwidth (min..max bands) and small-message latency against size (needs "
                             "matplotlib: the plot extra)")
    parser.rename("--algorithms", "--collective-algorithm")  # the 0.1 spelling
    return parser


def resolve_algorithms(collective: str, spec: str) -> list[str]:
    """``all`` (every algorithm and ``auto``) or a comma list validated against the collective."""
    from mpiml.collectives.registry import ALGORITHMS

    known = ["auto", *ALGORITHMS[collective]]
    if spec == "all":
        return [name for name in ALGORITHMS[collective]] + ["auto"]
    try:
        return comma_list(choices=known, what=f"{collective} algorithm")(spec)
    except argparse.ArgumentTypeError as exc:
        raise ArgumentError(f"--collective-algorithm: {exc}") from None


def main(argv=None) -> int:
    import numpy as np
    from mpi4py import MPI

    from mpiml.cli import plots
    from mpiml.perf import report
    from mpiml.perf.harness import Schedule, run_benchmark
    from mpiml.perf.machine import conditions, warning
    from mpiml.perf.sizes import parse_sizes
    from mpiml.runtime.agree import raise_if_any
    from mpiml.runtime.progress import Phase, note

    args = build_parser().parse_args(argv)
    comm = MPI.COMM_WORLD
    error = None
    try:
        sizes = args.sizes or parse_sizes(QUICK_SIZES if args.quick else DEFAULT_SIZES)
        algorithms = resolve_algorithms(args.collective, args.collective_algorithm)
        dtype = np.dtype(args.dtype)
        if dtype.kind not in "iuf":
            raise ArgumentError(f"--dtype {dtype} is not an integer or floating type")
        if args.shared_inputs and args.collective != "allreduce":
            raise ArgumentError("--shared-inputs is for allreduce")
        if args.op is not None and args.collective not in REDUCING:
            raise ArgumentError(f"--op is for {', '.join(REDUCING)}; {args.collective} does not reduce")
        args.op = args.op or "sum"
        if args.iters is not None and args.iters < 1:
            raise ArgumentError("--iters must be at least 1")
        if not 0 < args.min_time < float("inf") or args.max_iters < 1 or args.warmup < 0:
            raise ArgumentError(f"--min-time must be a positive number (got {args.min_time}), --max-iters at least "
                                f"1 (got {args.max_iters}), --warmup at least 0 (got {args.warmup})")
        if args.tuning:
            from mpiml.collectives.select import set_tuning

            set_tuning(args.tuning)
        check_writable(args.csv, "--csv")  # before minutes of measuring, not after
        check_writable(args.plot, "--plot")
        if args.plot:
            plots.require()
    except (ArgumentError, TypeError) as exc:
        error = exc if isinstance(exc, ArgumentError) else ArgumentError(str(exc))
    raise_if_any(error, comm)
    from mpiml.plan.guard import check_resources
    check_resources(comm)  # more ranks than cores: warn once (times measured so mislead)
    schedule = Schedule(iters=args.iters, warmup=max(args.warmup, 0),
                        min_time=0.02 if args.quick else args.min_time, max_iters=args.max_iters,
                        min_iters=3 if args.quick else 5)
    reduces = args.collective in REDUCING
    header = (f"# mpiml bench {args.collective}: {comm.Get_size()} ranks, dtype {dtype}, "
              + (f"op {args.op}, " if reduces else "")
              + f"{'in place' if args.in_place else 'out of place'}"
              + (", inputs in shared arrays" if args.shared_inputs else "") + "; times in microseconds, max over ranks")
    facts = conditions(comm)
    if not args.json:
        say(header)
        if warning(facts):
            say(warning(facts))
        say(report.fixed_width(report.headers(args.roof)))

    # With --json the table rows are not printed: lines on stderr say how far the sizes are.
    phase = Phase("measuring", total=len(sizes), unit="sizes", enabled=None if args.json else False)

    def show(size_records):
        if args.roof:  # right after this size's timings, by the same ranks (collective)
            from mpiml.perf.roof import roof_seconds

            report.add_roof(size_records, roof_seconds(args.collective, size_records[0]["bytes"], dtype, comm))
        if not args.json:
            say("\n".join(report.fixed_width(row) for row in report.table_rows(size_records)))
        phase.update(phase.done + 1)

    with phase:
        records = run_benchmark(args.collective, sizes, algorithms, dtype=dtype, op=args.op,
                                in_place=args.in_place, check=args.check, schedule=schedule, comm=comm,
                                on_size=show, shared_inputs=args.shared_inputs)
    error = None
    if comm.Get_rank() == 0:
        try:
            if args.csv:
                from mpiml.cli.outputs import rescue

                error = rescue(lambda path: report.write_csv(path, records), args.csv, "--csv", "results table")
                if error is None:
                    note(f"wrote {args.csv}")
            if args.plot:
                title = (f"mpiml bench {args.collective}: p={comm.Get_size()}, {dtype}"
                         + (f", op {args.op}" if reduces else "") + (", in place" if args.in_place else ""))
                plots.bench(args.plot, records, title, warning(facts))
                note(f"wrote {args.plot}")
        except (ArgumentError, OSError) as exc:  # the plot: a rescued table's message comes first
            error = error or (exc if isinstance(exc, ArgumentError) else ArgumentError(f"cannot write output: {exc}"))
    raise_if_any(error, comm)
    wrong = [f"{r['algorithm']}@{r['bytes']}" for r in records if r["correct"] is False]
    if args.json:
        emit_json({"collective": args.collective, "ranks": comm.Get_size(), "dtype": str(dtype), "op": args.op if reduces else None,
                   "in_place": args.in_place, "shared_inputs": args.shared_inputs, "checked": args.check, "all_correct": not wrong if args.check else None,
                   "mpi_library": MPI.Get_library_version().strip().splitlines()[0], "conditions": facts, "results": records})
    elif wrong:
        say(f"# WRONG results: {', '.join(wrong)}")
    return 1 if wrong else 0
